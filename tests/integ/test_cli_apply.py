"""`rivet apply / get / delete` against Consul KV (the double, or a live Consul when
CONSUL_HTTP_ADDR is set) and against a config directory."""
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from harness import KVConfig, NS, free_port, rivet_bin, run_cli, wait_for  # noqa: E402


@pytest.fixture
def kv(tmp_path, consul):
    root = "rivet-cli-%s" % uuid.uuid4().hex[:8]
    c = KVConfig(tmp_path / "boot", consul, root)
    c.settings("refreshRate: 1s\n")
    yield c
    if getattr(consul, "live", False):
        consul.kv_delete(root, recurse=True)


def store(kv, consul):
    return ["--consul", consul.addr, "--consul-root-key", kv.root_key]


def manifests(port, body="applied"):
    return """apiVersion: gateway.solo.io/v1
kind: Gateway
metadata: {name: gw, namespace: gloo-system}
spec: {bindAddress: 127.0.0.1, bindPort: %d, httpGateway: {}}
---
# stored form: recognised by virtualHost
metadata: {name: web}
virtualHost:
  domains: ['*']
  routes:
  - matchers: [{prefix: /}]
    directResponseAction: {status: 200, body: %s}
""" % (port, body)


def apply(tmp_path, text, *args):
    f = tmp_path / ("in-%s.yaml" % uuid.uuid4().hex[:6])
    f.write_text(text)
    return run_cli("apply", "-f", f, *args)


def test_apply_then_two_instances_serve(rivet, kv, consul, tmp_path):
    port = free_port()
    kv.gateway_ports["gw"] = port
    r = apply(tmp_path, manifests(port), *store(kv, consul))
    assert r.returncode == 0, r.stderr
    assert "VirtualService gloo-system/web created" in r.stdout
    assert "Gateway gloo-system/gw created" in r.stdout
    val = consul.kv_get("%s/gateway.solo.io/v1/VirtualService/%s/web" % (kv.root_key, NS))
    assert val is not None and b"virtualHost" in val["Value"]
    gwv = consul.kv_get("%s/gateway.solo.io/v1/Gateway/%s/gw" % (kv.root_key, NS))
    assert b"apiVersion" not in gwv["Value"] and b'"bindPort"' in gwv["Value"]  # stored form in Consul
    a = rivet(kv, args=store(kv, consul), workers=1)
    b = rivet(kv, args=store(kv, consul), workers=1)
    for rv in (a, b):
        assert rv.resource_status("VirtualService", "web")["state"] == "Accepted"
        assert "applied" in rv.admin_get("/config_dump").text
    assert a.get("/").text == "applied"
    # re-apply a change: both follow
    r = apply(tmp_path, manifests(port, "again"), *store(kv, consul))
    assert r.returncode == 0 and "VirtualService gloo-system/web configured" in r.stdout, r
    for rv in (a, b):
        wait_for(lambda rv=rv: "again" in rv.admin_get("/config_dump").text, 5, msg="new body in config_dump")
    r = apply(tmp_path, manifests(port, "again"), *store(kv, consul))
    assert "unchanged" in r.stdout


def test_invalid_document_refused_nothing_written(kv, consul, tmp_path):
    text = manifests(free_port()) + """---
metadata: {name: broken}
virtualHost:
  domains: ['*']
  routes:
  - matchers: [{prefix: no-slash}]
    directResponseAction: {status: 200}
"""
    r = apply(tmp_path, text, *store(kv, consul))
    assert r.returncode == 1
    assert "must start with '/'" in r.stderr and "nothing written" in r.stderr
    assert consul.kv_get("%s/gateway.solo.io/v1/Gateway/%s/gw" % (kv.root_key, NS)) is None
    assert consul.kv_get("%s/gateway.solo.io/v1/VirtualService/%s/web" % (kv.root_key, NS)) is None


def test_unknown_kind_needs_flag(kv, consul, tmp_path):
    r = apply(tmp_path, "metadata: {name: x}\nsomething: 1\n", *store(kv, consul))
    assert r.returncode == 1 and "--kind" in r.stderr
    r = apply(tmp_path, "metadata: {name: u1}\nstatic: {hosts: [{addr: 127.0.0.1, port: 9}]}\n",
              "--kind", "us", "-n", "team", *store(kv, consul))
    assert r.returncode == 0, r.stderr
    assert consul.kv_get("%s/gloo.solo.io/v1/Upstream/team/u1" % kv.root_key) is not None


def test_get_and_delete(kv, consul, tmp_path):
    port = free_port()
    assert apply(tmp_path, manifests(port), *store(kv, consul)).returncode == 0
    consul.kv_put("%s/gateway.solo.io/v1/VirtualService/%s/bad" % (kv.root_key, NS),
                  "metadata: {name: bad, namespace: gloo-system}\nvirtualHost: {domains: ['*'], bogus: 1}\n")
    r = run_cli("get", "virtualservices", *store(kv, consul))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAMESPACE", "NAME", "STATUS"]
    rows = {l.split()[1]: l.split()[2] for l in lines[1:]}
    assert rows == {"web": "Accepted", "bad": "Rejected"}
    r = run_cli("get", "vs", "web", "-o", "json", *store(kv, consul))
    doc = json.loads(r.stdout)
    assert doc["metadata"]["name"] == "web" and doc["status"]["state"] == "Accepted"
    assert doc["virtualHost"]["domains"] == ["*"]
    r = run_cli("get", "gw", "-o", "yaml", *store(kv, consul))
    assert "bindPort" in r.stdout
    r = run_cli("get", "vs", "nope", *store(kv, consul))
    assert r.returncode == 1 and "not found" in r.stderr
    r = run_cli("delete", "VirtualService", "web", *store(kv, consul))
    assert r.returncode == 0 and "deleted" in r.stdout, r.stderr
    assert consul.kv_get("%s/gateway.solo.io/v1/VirtualService/%s/web" % (kv.root_key, NS)) is None
    r = run_cli("delete", "vs", "web", *store(kv, consul))
    assert r.returncode == 1 and "not found" in r.stderr


def test_cas_conflict_reported_not_overwritten(kv, consul, tmp_path):
    if getattr(consul, "live", False):
        pytest.skip("needs the Consul double's slow switch to open the race window")
    port = free_port()
    assert apply(tmp_path, manifests(port, "first"), *store(kv, consul)).returncode == 0
    key = "%s/gateway.solo.io/v1/VirtualService/%s/web" % (kv.root_key, NS)
    f = tmp_path / "second.yaml"
    f.write_text(manifests(port, "second").split("---\n", 1)[1])   # the VirtualService alone
    consul.fault_slow(2000)
    consul.clear_requests()             # forget the first apply's write
    p = subprocess.Popen([rivet_bin(), "apply", "-f", str(f)] + store(kv, consul), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    # the apply read the key and its CAS write has reached the double, which holds it for 2 s
    # (the double records a request before the slow fault delays it): someone else writes now.
    # A fixed sleep here raced the apply's start-up on a slow machine.
    def cas_write_held():
        return [r for r in consul.requests("/v1/kv/" + key) if r["method"] == "PUT" and "cas" in r["query"]]
    wait_for(cas_write_held, timeout=20, interval=0.01, msg="the apply's CAS write at the double")
    consul.kv_put(key, "metadata: {name: web, namespace: gloo-system}\nvirtualHost: {domains: [other.example]}\n")
    out, err = p.communicate(timeout=30)
    consul.clear_fault()
    assert p.returncode == 1, (out, err)
    assert "conflict" in err and "not overwritten" in err
    assert b"other.example" in consul.kv_get(key)["Value"]


def test_directory_store(rivet, tmp_path, cfg):
    port = free_port()
    cfg.gateway_ports["gw"] = port
    r = apply(tmp_path, manifests(port, "fromdir"), "--dir", cfg.root)
    assert r.returncode == 0, r.stderr
    assert (cfg.root / "virtualservices" / NS / "web.yaml").exists()
    rv = rivet(cfg)
    assert rv.get("/").text == "fromdir"
    r = run_cli("get", "vs", "--dir", cfg.root)
    assert "web" in r.stdout and "Accepted" in r.stdout
    r = run_cli("delete", "vs", "web", "--dir", cfg.root)
    assert r.returncode == 0
    assert not (cfg.root / "virtualservices" / NS / "web.yaml").exists()


def test_help_lists_every_flag():
    for cmd, flags in (("apply", ["-f", "--kind", "-n", "--dry-run", "--dir", "--consul", "--consul-root-key",
                                  "--consul-allow-stale", "--settings-namespace"]),
                       ("get", ["-n", "-A", "-o", "--dir", "--consul"]),
                       ("delete", ["-n", "--dir", "--consul"])):
        r = run_cli(cmd, "--help")
        assert r.returncode == 0
        for fl in flags:
            assert fl in r.stdout, (cmd, fl)
