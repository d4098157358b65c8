"""The command line: version, help, and `rivet validate` (one line per resource, exit codes)."""
import re

import pytest

from harness import NS, route, run_cli

LINE = re.compile(r"^(\w+) ([^/\s]+)/(\S+) (Accepted|Rejected|Warning)(?:: (.+))?$")


def validate(cfg_root):
    p = run_cli("validate", "--dir", cfg_root)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    parsed = {}
    for ln in lines:
        m = LINE.match(ln)
        if m:
            parsed[(m.group(1), m.group(2), m.group(3))] = (m.group(4), m.group(5) or "")
    return p, lines, parsed


def basic_config(cfg, kube=False):
    cfg.gateway("gw", kube=kube)
    cfg.upstream("up", [("127.0.0.1", 9)], kube=kube)
    cfg.vs("vs", [route(prefix="/", upstream="up")], kube=kube)


def test_version():
    p = run_cli("version")
    assert p.returncode == 0, p
    assert re.search(r"^rivet \S+", p.stdout.strip()), p.stdout


def test_help_lists_commands():
    p = run_cli("--help")
    assert p.returncode == 0, p
    for cmd in ("run", "validate", "version"):
        assert re.search(r"\b%s\b" % cmd, p.stdout), (cmd, p.stdout)


@pytest.mark.parametrize("cmd,flags", [
    ("run", ["--dir", "--namespace", "--admin", "--workers", "--log-level"]),
    ("validate", ["--dir"]),
    ("version", []),
])
def test_command_help_lists_flags(cmd, flags):
    p = run_cli(cmd, "--help")
    assert p.returncode == 0, p
    for f in flags:
        assert f in p.stdout, (f, p.stdout)


def test_validate_all_accepted(cfg):
    basic_config(cfg)
    p, lines, parsed = validate(cfg.root)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert parsed.get(("Gateway", NS, "gw"), ("",))[0] == "Accepted", lines
    assert parsed.get(("Upstream", NS, "up"), ("",))[0] == "Accepted", lines
    assert parsed.get(("VirtualService", NS, "vs"), ("",))[0] == "Accepted", lines
    # one line per resource, every line in the documented shape
    assert len(lines) == 3, lines
    assert all(LINE.match(ln) for ln in lines), lines


def test_validate_kubernetes_form(cfg):
    basic_config(cfg, kube=True)
    p, lines, parsed = validate(cfg.root)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert {k[0] for k, v in parsed.items() if v[0] == "Accepted"} == {"Gateway", "Upstream", "VirtualService"}, lines


def test_validate_every_kind(cfg):
    basic_config(cfg)
    cfg.upstream("up2", [("127.0.0.1", 10)])
    cfg.upstream_group("grp", [("up", 1), ("up2", 2)])
    cfg.route_table("rt", [route(prefix="/api/x", upstream="up")])
    cfg.vs("vs2", [route(prefix="/api", delegate={"ref": {"name": "rt", "namespace": NS}}),
                   route(prefix="/g", group="grp")], domains=["two.test"])
    p, lines, parsed = validate(cfg.root)
    assert p.returncode == 0, (p.stdout, p.stderr)
    for key in [("UpstreamGroup", NS, "grp"), ("RouteTable", NS, "rt"), ("VirtualService", NS, "vs2")]:
        assert parsed.get(key, ("",))[0] == "Accepted", (key, lines)
    assert len(lines) == 7, lines


def test_validate_unknown_field_rejected(cfg):
    basic_config(cfg)
    cfg.vs("bad", [route(prefix="/", upstream="up")], domains=["bad.test"], bogusField=1)
    p, lines, parsed = validate(cfg.root)
    assert p.returncode == 1, (p.stdout, p.stderr)
    state, reason = parsed.get(("VirtualService", NS, "bad"), ("", ""))
    assert state == "Rejected", lines
    assert "bogusField" in reason, reason
    # the good ones are still reported
    assert parsed.get(("VirtualService", NS, "vs"), ("",))[0] == "Accepted", lines


def test_validate_bad_yaml_rejected(cfg):
    basic_config(cfg)
    cfg.write("virtualservices", "broken", "metadata: {name: broken, namespace: gloo-system\nvirtualHost: [\n")
    p, lines, parsed = validate(cfg.root)
    assert p.returncode == 1, (p.stdout, p.stderr)
    rejected = [ln for ln in lines if "Rejected" in ln]
    assert rejected and any("broken" in ln for ln in rejected), lines


def test_validate_missing_upstream_is_warning(cfg):
    cfg.gateway("gw")
    cfg.vs("vs", [route(prefix="/", upstream="nosuchupstream")])
    p, lines, parsed = validate(cfg.root)
    assert p.returncode == 0, (p.stdout, p.stderr)
    state, reason = parsed.get(("VirtualService", NS, "vs"), ("", ""))
    assert state == "Warning", lines
    assert "nosuchupstream" in reason, reason


def test_validate_snake_case_fields(cfg):
    cfg.write("gateways", "gw", "metadata: {name: gw, namespace: gloo-system}\n"
                                "bind_address: 127.0.0.1\nbind_port: 18080\nhttp_gateway: {}\n")
    cfg.write("upstreams", "up", "metadata: {name: up, namespace: gloo-system}\n"
                                 "static:\n  hosts:\n  - addr: 127.0.0.1\n    port: 9\n"
                                 "    load_balancing_weight: 2\n"
                                 "load_balancer_config:\n  round_robin: {}\n")
    cfg.write("virtualservices", "vs",
              "metadata: {name: vs, namespace: gloo-system}\n"
              "virtual_host:\n"
              "  domains: ['*']\n"
              "  routes:\n"
              "  - matchers: [{prefix: /a, case_sensitive: false}]\n"
              "    route_action:\n"
              "      single: {upstream: {name: up, namespace: gloo-system}}\n"
              "    options:\n"
              "      prefix_rewrite: /\n"
              "      header_manipulation:\n"
              "        request_headers_to_add:\n"
              "        - header: {key: x-a, value: b}\n"
              "  - matchers: [{exact: /d}]\n"
              "    direct_response_action: {status: 200, body: hi}\n")
    p, lines, parsed = validate(cfg.root)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert parsed.get(("VirtualService", NS, "vs"), ("",))[0] == "Accepted", lines
    assert parsed.get(("Upstream", NS, "up"), ("",))[0] == "Accepted", lines
    assert parsed.get(("Gateway", NS, "gw"), ("",))[0] == "Accepted", lines


def test_validate_unreadable_dir_exits_2(tmp_path):
    p = run_cli("validate", "--dir", tmp_path / "does-not-exist")
    assert p.returncode == 2, p


def test_validate_settings_selects_directory(tmp_path):
    """DIR/gloo-system/default.yaml with directoryConfigSource picks the config directory."""
    from harness import ConfigDir
    boot = tmp_path / "boot"
    real = ConfigDir(tmp_path / "elsewhere")
    real.gateway("gw")
    real.vs("from-settings", [route(prefix="/", direct=(200, "x"))])
    (boot / NS).mkdir(parents=True)
    (boot / NS / "default.yaml").write_text(
        "metadata: {name: default, namespace: gloo-system}\n"
        "discoveryNamespace: gloo-system\n"
        "directoryConfigSource:\n  directory: %s\n"
        "refreshRate: 5s\n" % real.root)
    p, lines, parsed = validate(boot)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert parsed.get(("VirtualService", NS, "from-settings"), ("",))[0] == "Accepted", lines


def test_unknown_command_fails():
    p = run_cli("no-such-command")
    assert p.returncode != 0
