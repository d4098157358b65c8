"""Settings refreshRate: the periodic full resync.

The change the inotify watcher cannot see: the resource file in the config tree is a symlink to a
file outside every watched directory. Replacing the target (atomically, in its own directory)
raises no inotify event on the config tree - the symlink entry does not change - but the scan
stat()s through the link and sees a new inode. So only the periodic resync can pick it up:

- with `refreshRate: 1s` the edit is live within a few seconds;
- with the default 60 s it is not live after 2.5 s (the control that shows the watcher really
  misses it, so the first test measures the resync and not inotify);
- with `refreshRate: 1s` and nothing changing (a static Upstream with `addr: localhost`, whose
  resolution does not change), the /status version stays put: a resync that finds the same
  config does not republish.
"""
import json
import os
import time

from harness import NS, ConfigDir, atomic_write, route, timeout_scale, to_yaml


def _boot(tmp_path, refresh=None):
    """DIR with a Settings file pointing at DIR/cfg; returns (bootstrap dir, ConfigDir)."""
    boot = tmp_path / "boot"
    cfg = ConfigDir(boot / "cfg")
    settings = {"metadata": {"name": "default", "namespace": NS},
                "directoryConfigSource": {"directory": "cfg"}}
    if refresh:
        settings["refreshRate"] = refresh
    atomic_write(boot / NS / "default.yaml", to_yaml(settings))
    return boot, cfg


def _linked_vs(tmp_path, cfg, body_text):
    """VirtualService 'vs' whose file is a symlink to outside/vs.yaml (outside every watch)."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    target = outside / "vs.yaml"
    _write_vs_target(target, body_text)
    link = cfg.path("virtualservices", "vs")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)
    return target


def _write_vs_target(target, body_text):
    doc = {"metadata": {"name": "vs", "namespace": NS},
           "virtualHost": {"domains": ["*"], "routes": [route(prefix="/", direct=(200, body_text))]}}
    atomic_write(target, to_yaml(doc))


# How long a 1 s resync may take to show an edit: 10 s nominal, scaled like every wait, but
# always well below the 60 s default period the tests tell it from (wait_body scales it back)
RESYNC_BOUND = min(10.0, 45.0 / timeout_scale())


def _version(rv):
    r = rv.admin_get("/status")
    assert r.status == 200, r
    return json.loads(r.body)["version"]


def _published(rv):
    return rv.stderr().count(" published (")


def test_refresh_rate_picks_up_change_inotify_cannot_see(tmp_path, rivet):
    boot, cfg = _boot(tmp_path, "1s")
    port = cfg.gateway()
    target = _linked_vs(tmp_path, cfg, "one")
    rv = rivet(cfg, dir_=boot)
    assert rv.get("/", port=port).text == "one"
    st = rv.resource_status("Settings", "default")
    assert st and st["state"] == "Accepted", st
    v0 = _version(rv)
    _write_vs_target(target, "two")
    # picked up by a 1 s resync; the bound only has to stay well below the default 60 s that
    # would otherwise be at work (a 4 s limit, and a timed assertion, was thin for ASan on a
    # busy machine)
    rv.wait_body("/", "two", port=port, timeout=RESYNC_BOUND)
    assert _version(rv) == v0 + 1


def test_default_refresh_does_not_see_it(tmp_path, rivet):
    """Control: without a short refreshRate (default 60 s), the same edit stays invisible."""
    boot, cfg = _boot(tmp_path, None)
    port = cfg.gateway()
    target = _linked_vs(tmp_path, cfg, "one")
    rv = rivet(cfg, dir_=boot)
    assert rv.get("/", port=port).text == "one"
    v0 = _version(rv)
    _write_vs_target(target, "two")
    time.sleep(2.5)
    assert rv.get("/", port=port).text == "one"
    assert _version(rv) == v0
    # any event in the watched tree triggers a full scan, which then sees it
    atomic_write(cfg.root / "upstreams" / NS / "unrelated.yaml",
                 to_yaml({"metadata": {"name": "unrelated", "namespace": NS},
                          "static": {"hosts": [{"addr": "127.0.0.1", "port": 9}]}}))
    rv.wait_body("/", "two", port=port, timeout=10.0)


def test_refresh_without_changes_does_not_republish(tmp_path, backend, rivet):
    b = backend("named", localhost=True)
    boot, cfg = _boot(tmp_path, "1s")
    port = cfg.gateway()
    cfg.upstream("up", [("localhost", b.port)])
    cfg.vs("vs", [route(prefix="/", upstream="up")])
    rv = rivet(cfg, dir_=boot)
    assert rv.get("/a", port=port).status == 200
    v0 = _version(rv)
    n0 = _published(rv)
    time.sleep(2.6)                      # at least two resyncs (re-resolving localhost each time)
    assert _version(rv) == v0
    assert _published(rv) == n0, rv.stderr()[-3000:]
    assert rv.get("/b", port=port).status == 200

    # an ordinary edit is live (inotify), and publishes exactly one new version
    cfg.vs("vs", [route(prefix="/", direct=(200, "edited"))])
    rv.wait_body("/", "edited", port=port, timeout=10.0)
    assert _version(rv) == v0 + 1
    time.sleep(1.5)
    assert _version(rv) == v0 + 1


def test_refresh_rate_edit_in_settings_applies(tmp_path, rivet):
    """Lowering refreshRate in the Settings file while running re-arms the resync timer: an
    invisible edit made after the Settings change is picked up by the new period."""
    boot, cfg = _boot(tmp_path, "60s")
    port = cfg.gateway()
    target = _linked_vs(tmp_path, cfg, "one")
    rv = rivet(cfg, dir_=boot)
    v0 = _version(rv)
    atomic_write(boot / NS / "default.yaml",
                 to_yaml({"metadata": {"name": "default", "namespace": NS},
                          "directoryConfigSource": {"directory": "cfg"}, "refreshRate": "1s"}))
    # the Settings edit itself is seen by inotify (10 ms debounce); it logs nothing, so wait a bit
    time.sleep(0.5)
    assert _version(rv) == v0          # nothing in the config changed
    _write_vs_target(target, "two")
    rv.wait_body("/", "two", port=port, timeout=RESYNC_BOUND)       # well below the old 60 s period
