"""Test doubles for rivet's control-plane dependencies (pure Python 3 standard library).

consul.ConsulDouble   a Consul HTTP API double (KV, catalog, health, agent), with fault switches.
                      See doc/internals/consul-double.md.
"""
