"""Secrets from directories: `rivet apply/get/delete` with Secret documents (Gloo's stored form
and Kubernetes Secrets), key material never printed, and `rivet run` watching DIR/secrets (a
malformed file reported once per change with its path and reason, a rotated file rebuilding
the snapshot, the source's health in /ready and /metrics), plus secretOptions directory
sources and their precedence.

The TLS handshakes that use these secrets are the TLS tests' business (test_tls*.py).
"""
import json
import os
import signal
import stat

from harness import NS, atomic_write, metric_sum, route, run_cli, wait_for

KEY = "KEYMATERIAL-must-never-be-printed"
CERT = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def b64(s):
    import base64
    return base64.b64encode(s.encode()).decode()


def gloo_tls(name, ns=NS, key=KEY, cert=CERT):
    return json.dumps({"metadata": {"name": name, "namespace": ns},
                       "tls": {"certChain": cert, "privateKey": "-----BEGIN PRIVATE KEY-----\n%s\n"
                               "-----END PRIVATE KEY-----\n" % key, "rootCa": cert}})


def kube_tls(name, ns):
    return ("apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\ntype: kubernetes.io/tls\n"
            "data:\n  tls.crt: %s\n  tls.key: %s\n" % (name, ns, b64(CERT), b64(KEY)))


def no_key(*texts):
    for t in texts:
        assert KEY not in t, "key material printed:\n%s" % t


def status_version(rv):
    r = rv.admin_get("/status")
    assert r.status == 200, r
    return json.loads(r.body)["version"]


# ---- CLI ---------------------------------------------------------------------------------


def test_apply_get_delete(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    f = tmp_path / "secrets.yaml"
    f.write_text(gloo_tls("gloo-form") + "\n---\n" + kube_tls("kube-form", "web") +
                 "---\nmetadata: {name: creds}\naws: {accessKey: AKIAEXAMPLE, secretKey: %s}\n" % KEY)
    r = run_cli("apply", "-f", f, "--dir", d)
    assert r.returncode == 0, r.stderr
    no_key(r.stdout, r.stderr)
    assert "Secret gloo-system/gloo-form created" in r.stdout
    assert "Secret web/kube-form created" in r.stdout
    # Gloo's layout, stored form, readable by the owner only
    p = d / "secrets" / "web" / "kube-form.yaml"
    assert p.exists()
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    text = p.read_text()
    assert "tls:" in text and "certChain" in text and "kubernetes.io" not in text  # converted to Gloo's form
    assert not (d / "virtualservices").exists() and not (d / "upstreams").exists()

    r = run_cli("apply", "-f", f, "--dir", d)
    assert r.returncode == 0 and r.stdout.count("unchanged") == 3, r.stdout + r.stderr

    for fmt in ("table", "yaml", "json"):
        r = run_cli("get", "secret", "--dir", d, "-o", fmt)
        assert r.returncode == 0, r.stderr
        no_key(r.stdout, r.stderr)
        for name in ("gloo-form", "kube-form", "creds"):
            assert name in r.stdout, (fmt, r.stdout)
    r = run_cli("get", "secrets", "--dir", d, "-o", "json")
    rows = {x["metadata"]["name"]: x for x in json.loads(r.stdout)}
    assert rows["kube-form"]["metadata"]["namespace"] == "web"
    assert rows["kube-form"]["kind"] == "tls" and rows["kube-form"]["fields"] == ["certChain", "privateKey"]
    assert rows["gloo-form"]["fields"] == ["certChain", "privateKey", "rootCa"]
    assert rows["creds"]["kind"] == "aws" and rows["creds"]["fields"] == ["accessKey", "secretKey"]
    assert all(x["status"]["state"] == "Accepted" for x in rows.values())

    r = run_cli("get", "secret", "kube-form", "-n", "web", "--dir", d)
    assert r.returncode == 0 and "kube-form" in r.stdout and "gloo-form" not in r.stdout
    r = run_cli("get", "secret", "kube-form", "--dir", d)     # default namespace: not there
    assert r.returncode == 1 and "not found" in r.stderr

    r = run_cli("delete", "secret", "kube-form", "-n", "web", "--dir", d)
    assert r.returncode == 0 and "deleted" in r.stdout, r.stderr
    assert not p.exists()
    r = run_cli("delete", "secret", "kube-form", "-n", "web", "--dir", d)
    assert r.returncode == 1 and "not found" in r.stderr
    r = run_cli("get", "secret", "--dir", d)
    assert "kube-form" not in r.stdout and "gloo-form" in r.stdout


def test_apply_refuses_bad_secrets_writes_nothing(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    f = tmp_path / "bad.yaml"
    f.write_text(gloo_tls("good") + "\n---\nmetadata: {name: o}\noauth: {clientSecret: %s}\n" % KEY +
                 "---\nmetadata: {name: half}\ntls: {privateKey: %s}\n" % KEY)
    r = run_cli("apply", "-f", f, "--dir", d)
    assert r.returncode == 1
    no_key(r.stdout, r.stderr)
    assert "oauth is not supported yet" in r.stderr
    assert "tls.certChain is required" in r.stderr
    assert "nothing written" in r.stderr
    assert not (d / "secrets").exists()


def test_get_reports_malformed_file_without_content(tmp_path):
    d = tmp_path / "dir"
    (d / "secrets" / NS).mkdir(parents=True)
    (d / "secrets" / NS / "broken.yaml").write_text("metadata: {name: broken}\ntls: {certChain: c, "
                                                   "privateKey: \"%s\"\n" % KEY)
    r = run_cli("get", "secret", "--dir", d, "-o", "json")
    no_key(r.stdout, r.stderr)
    row = json.loads(r.stdout)[0]
    assert row["metadata"]["name"] == "broken" and row["status"]["state"] == "Rejected"
    assert "broken.yaml" in row["status"]["reason"]


def test_secret_options_directories_and_precedence(tmp_path):
    """secretOptions.sources[].directory: the root is the directory itself (no secrets/ level);
    directories are looked up sorted by path (Gloo's order), the first holding a name wins."""
    d = tmp_path / "dir"
    a, z = tmp_path / "a-secrets", tmp_path / "z-secrets"
    atomic_write(d / NS / "default.yaml",
                 "secretOptions:\n  sources:\n  - directory: {directory: %s}\n  - directory: {directory: %s}\n"
                 % (z, a))
    atomic_write(z / NS / "both.yaml", gloo_tls("both"))
    atomic_write(a / NS / "both.yaml", gloo_tls("both"))
    atomic_write(z / NS / "only-z.yaml", gloo_tls("only-z"))
    r = run_cli("get", "secret", "--dir", d, "-o", "json")
    assert r.returncode == 0, r.stderr
    rows = [(x["metadata"]["name"], x["source"], x["status"]["state"]) for x in json.loads(r.stdout)]
    assert ("both", str(a / NS / "both.yaml"), "Accepted") in rows
    assert ("both", str(z / NS / "both.yaml"), "Shadowed") in rows
    assert ("only-z", str(z / NS / "only-z.yaml"), "Accepted") in rows
    # apply writes to the first source: the one looked up first
    f = tmp_path / "new.yaml"
    f.write_text(gloo_tls("new"))
    r = run_cli("apply", "-f", f, "--dir", d)
    assert r.returncode == 0, r.stderr
    assert (a / NS / "new.yaml").exists() and not (a / "secrets").exists()
    # deleting the used copy uncovers the other one, and says so
    r = run_cli("delete", "secret", "both", "--dir", d)
    assert r.returncode == 0 and "also holds" in r.stdout, r.stdout + r.stderr
    r = run_cli("get", "secret", "both", "--dir", d, "-o", "json")
    assert json.loads(r.stdout)["status"]["state"] == "Accepted"


# ---- rivet run ------------------------------------------------------------------------------


def secret_path(cfg, name, ns=NS):
    return cfg.root / "secrets" / ns / ("%s.yaml" % name)


def test_malformed_secret_logged_once_and_reported(cfg, rivet):
    port = cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "one"))])
    atomic_write(secret_path(cfg, "good"), gloo_tls("good"))
    atomic_write(secret_path(cfg, "bad"), "metadata: {name: bad}\ntls: {certChain: c, privateKey: [%s]}\n" % KEY)
    rv = rivet(cfg)
    line = "secret %s/bad cannot be used" % NS
    wait_for(lambda: line in rv.stderr(), msg="the bad secret logged")
    err = rv.stderr()
    no_key(err)
    assert "bad.yaml" in err and "tls.privateKey" in err
    assert "secret %s/good loaded" % NS in err
    ready = rv.admin_get("/ready").text
    assert "secrets directory" in ready and "1 secrets, 1 failed to decode" in ready, ready
    m = rv.metrics()
    assert metric_sum(m, "rivet_secret_source_secrets", state="ok") == 1
    assert metric_sum(m, "rivet_secret_source_secrets", state="failed") == 1
    assert metric_sum(m, "rivet_secret_source_healthy", source="directory") == 1
    # an unrelated change: rebuilt, the bad secret is not logged again
    cfg.vs("vs", [route(direct=(200, "two"))])
    rv.wait_body("/", "two", port=port)
    assert rv.stderr().count(line) == 1
    # fixed: logged as such, counts follow
    atomic_write(secret_path(cfg, "bad"), gloo_tls("bad"))
    wait_for(lambda: "secret %s/bad fixed" % NS in rv.stderr(), msg="the fix logged")
    wait_for(lambda: metric_sum(rv.metrics(), "rivet_secret_source_secrets", state="ok") == 2, msg="2 secrets")
    no_key(rv.stderr(), rv.admin_get("/config_dump").text, rv.admin_get("/status").text)


def test_rotation_rebuilds_and_unchanged_content_does_not(cfg, rivet):
    port = cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "v1"))])
    atomic_write(secret_path(cfg, "s1"), gloo_tls("s1", key="first-" + KEY))
    rv = rivet(cfg)
    wait_for(lambda: "secret %s/s1 loaded" % NS in rv.stderr(), msg="secret loaded")
    v0 = status_version(rv)
    # rotated on disk (atomic replace, as cert-manager or an operator does): a new snapshot
    atomic_write(secret_path(cfg, "s1"), gloo_tls("s1", key="second-" + KEY))
    wait_for(lambda: "secret %s/s1 changed" % NS in rv.stderr(), msg="rotation seen")
    wait_for(lambda: status_version(rv) == v0 + 1, msg="config version bumped by the rotation")
    # the same content written again (a new inode), then a forced re-read: nothing to rebuild
    atomic_write(secret_path(cfg, "s1"), gloo_tls("s1", key="second-" + KEY))
    rv.signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: re-reading config" in rv.stderr(), msg="SIGHUP handled")
    cfg.vs("vs", [route(direct=(200, "v2"))])
    rv.wait_body("/", "v2", port=port)
    assert status_version(rv) == v0 + 2, "an unchanged secret must not cost a rebuild"
    assert rv.stderr().count("secret %s/s1 changed" % NS) == 1
    # removed: logged, and a rebuild (every secretRef to it now misses)
    os.unlink(secret_path(cfg, "s1"))
    wait_for(lambda: "secret %s/s1 removed" % NS in rv.stderr(), msg="removal seen")
    wait_for(lambda: status_version(rv) == v0 + 3, msg="rebuilt after the removal")
    no_key(rv.stderr())


def test_secrets_directory_created_after_start(cfg, rivet):
    """No DIR/secrets at start is no secrets; the directory and a secret appearing later are
    picked up by the watch (the config directory's watch covers DIR/secrets/<ns>)."""
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    rv = rivet(cfg)
    atomic_write(secret_path(cfg, "late", ns="web"), gloo_tls("late", ns="web"))
    wait_for(lambda: "secret web/late loaded" in rv.stderr(), msg="late secret loaded")


def test_validate_and_get_resolve_secret_refs(tmp_path, cfg):
    """`rivet validate` and `rivet get` resolve secretRefs from the directory secret source as
    `rivet run` does: an Upstream whose rootCa comes from a secret is Accepted; without the
    secret it is Rejected naming it."""
    import shutil
    if not shutil.which("openssl"):
        import pytest
        pytest.skip("needs the openssl CLI (scripts/deps.sh installs it)")
    from tls_upstream_server import Pki
    pki = Pki(tmp_path / "pki")
    with open(pki.ca) as f:
        ca = f.read()
    cfg.gateway()
    cfg.write("upstreams", "tls-up", {"static": {"hosts": [{"addr": "127.0.0.1", "port": 8443}]},
                                      "sslConfig": {"secretRef": {"name": "up-ca", "namespace": NS}}})
    cfg.vs("vs", [route(prefix="/", upstream="tls-up")])
    atomic_write(cfg.root / "secrets" / NS / "up-ca.yaml",
                 json.dumps({"metadata": {"name": "up-ca", "namespace": NS}, "tls": {"rootCa": ca}}))
    r = run_cli("validate", "--dir", cfg.root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Upstream %s/tls-up Accepted" % NS in r.stdout
    r = run_cli("get", "us", "tls-up", "--dir", cfg.root)
    assert r.returncode == 0 and "Accepted" in r.stdout, r.stdout + r.stderr
    os.unlink(cfg.root / "secrets" / NS / "up-ca.yaml")
    r = run_cli("validate", "--dir", cfg.root)
    assert r.returncode == 1
    line = [x for x in r.stdout.splitlines() if x.startswith("Upstream %s/tls-up" % NS)][0]
    assert "Rejected" in line and "up-ca" in line, line


def test_secret_options_directory_watched_and_settings_switch(cfg, rivet, tmp_path):
    """A secretOptions directory outside DIR is watched too; Settings switching the secret
    sources at run time start from the new sources (the old directory no longer counts)."""
    port = cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    atomic_write(secret_path(cfg, "legacy"), gloo_tls("legacy"))
    rv = rivet(cfg)
    wait_for(lambda: "secret %s/legacy loaded" % NS in rv.stderr(), msg="DIR/secrets read without Settings")
    ext = tmp_path / "ext-secrets"
    atomic_write(ext / NS / "ext1.yaml", gloo_tls("ext1"))
    atomic_write(cfg.root / NS / "default.yaml",
                 "secretOptions:\n  sources:\n  - directory: {directory: %s}\n" % ext)
    wait_for(lambda: "secret %s/ext1 loaded" % NS in rv.stderr(), msg="the new source read")
    wait_for(lambda: "ext-secrets: healthy (1 secrets)" in rv.admin_get("/ready").text, msg="/ready names it")
    assert "secrets directory %s" % (cfg.root / "secrets") not in rv.admin_get("/ready").text
    # a secret added later to that directory is picked up by its watch
    atomic_write(ext / NS / "ext2.yaml", gloo_tls("ext2"))
    wait_for(lambda: "secret %s/ext2 loaded" % NS in rv.stderr(), msg="watched outside DIR")
    assert rv.get("/", port=port).status == 200
    no_key(rv.stderr())


def test_refresh_rate_resync_sees_a_change_inotify_cannot(cfg, rivet, tmp_path):
    """The secret file is a symlink to a file outside every watched directory (as with a
    mounted volume): replacing the target raises no event in the watched tree, so only the
    refreshRate resync (1 s here) picks the rotation up."""
    cfg.gateway()
    cfg.vs("vs", [route(direct=(200, "x"))])
    atomic_write(cfg.root / NS / "default.yaml", "refreshRate: 1s\n")
    outside = tmp_path / "outside"
    atomic_write(outside / "s.yaml", gloo_tls("linked", key="one-" + KEY))
    link = secret_path(cfg, "linked")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside / "s.yaml", link)
    rv = rivet(cfg)
    wait_for(lambda: "secret %s/linked loaded" % NS in rv.stderr(), msg="linked secret loaded")
    v0 = status_version(rv)
    atomic_write(outside / "s.yaml", gloo_tls("linked", key="two-" + KEY))
    wait_for(lambda: "secret %s/linked changed" % NS in rv.stderr(), timeout=10, msg="resync saw the rotation")
    wait_for(lambda: status_version(rv) > v0, msg="rebuilt")


def test_apply_with_consul_config_store(tmp_path, consul):
    """With Consul KV holding the config, Secrets still go to the secret store: DIR/secrets
    when --dir gives one (Settings consulKvSource), and none with --consul alone - refused
    before anything is written."""
    import uuid
    from harness import KV_GROUPS
    root = "rivet-sec-%s" % uuid.uuid4().hex[:8]
    f = tmp_path / "both.yaml"
    f.write_text("metadata: {name: web}\nvirtualHost: {domains: ['*'], routes: []}\n---\n" + gloo_tls("web-tls"))
    vs_key = "%s/%s/%s/web" % (root, KV_GROUPS["virtualservices"], NS)
    r = run_cli("apply", "-f", f, "--consul", consul.addr, "--consul-root-key", root)
    assert r.returncode == 2 and "no secret store" in r.stderr and "nothing written" in r.stderr, r.stderr
    assert consul.kv_get(vs_key) is None
    boot = tmp_path / "boot"
    atomic_write(boot / NS / "default.yaml", "consulKvSource: {rootKey: %s}\nconsul: {address: %s}\n"
                 % (root, consul.addr))
    r = run_cli("apply", "-f", f, "--dir", boot)
    assert r.returncode == 0, r.stderr
    no_key(r.stdout, r.stderr)
    assert consul.kv_get(vs_key) is not None
    assert (boot / "secrets" / NS / "web-tls.yaml").exists()
    assert consul.kv_get("%s/gloo.solo.io/v1/Secret/%s/web-tls" % (root, NS)) is None
    if getattr(consul, "live", False):
        consul.kv_delete(root, recurse=True)


def test_watch_namespaces_limit_secret_lookups(tmp_path):
    """As Gloo watches secrets only in watchNamespaces (plus the discovery namespace), a
    secret elsewhere does not exist for a secretRef; `rivet get secret` marks it Unwatched."""
    d = tmp_path / "dir"
    atomic_write(d / NS / "default.yaml", "watchNamespaces: [web]\n")
    atomic_write(d / "secrets" / "web" / "w.yaml", gloo_tls("w", ns="web"))
    atomic_write(d / "secrets" / "other" / "o.yaml", gloo_tls("o", ns="other"))
    atomic_write(d / "secrets" / NS / "g.yaml", gloo_tls("g"))
    r = run_cli("get", "secret", "--dir", d, "-o", "json")
    assert r.returncode == 0, r.stderr
    state = {x["metadata"]["name"]: x["status"]["state"] for x in json.loads(r.stdout)}
    assert state == {"w": "Accepted", "o": "Unwatched", "g": "Accepted"}, state   # g: discovery namespace
