"""Fixtures for the rivet integration tests.

    cfg             a ConfigDir in the test's temp dir (write resources, atomically)
    backend         factory: backend(name=..., handler=...) -> recording Backend
    hang_server     factory: a server that accepts and never answers
    closed_port     factory: a port that refuses connections
    rivet           factory: rivet(cfg, **kw) -> started, ready Rivet (stopped by PID at teardown)

Run: RIVET_BIN=/path/to/rivet /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integ
"""
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from backend import Backend, ClosedPort, HangServer  # noqa: E402
from harness import ConfigDir, LiveConsul, Rivet, free_port, rivet_bin  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from doubles.consul import ConsulDouble  # noqa: E402

LIVE = os.environ.get("CONSUL_HTTP_ADDR", "")


@pytest.fixture(params=["double", "live"])
def consul(request):
    """A Consul for the KV source and CLI tests: the project's double, and a live Consul when
    CONSUL_HTTP_ADDR is set (that variant is skipped otherwise, saying so)."""
    if request.param == "live":
        if not LIVE:
            pytest.skip("live Consul: CONSUL_HTTP_ADDR is not set (these tests ran against the double)")
        yield LiveConsul(LIVE)
        return
    d = ConsulDouble(jitter=False, port=free_port()).start()
    d.live = False
    yield d
    d.stop()


def pytest_configure(config):
    b = rivet_bin()
    if not os.path.exists(b):
        sys.stderr.write("warning: RIVET_BIN %s does not exist: every test will fail\n" % b)


@pytest.fixture
def cfg(tmp_path):
    return ConfigDir(tmp_path / "config")


def _factory(request, make):
    made = []

    def create(*a, **kw):
        obj = make(*a, **kw)
        made.append(obj)
        return obj

    yield create
    for obj in reversed(made):
        obj.stop()


@pytest.fixture
def backend(request):
    yield from _factory(request, Backend)


@pytest.fixture
def hang_server(request):
    yield from _factory(request, HangServer)


@pytest.fixture
def closed_port(request):
    yield from _factory(request, ClosedPort)


@pytest.fixture
def rivet(request, tmp_path):
    """rivet(cfg, ready=True, **Rivet kwargs) starts `rivet run` and waits for /ready 200.
    Teardown: SIGTERM by PID (SIGKILL after 10 s); a sanitizer report or a crash is an error."""
    started = []
    request.node._rivets = started

    def start(cfg, ready=True, **kw):
        rv = Rivet(cfg, tmp_path / "rivet", **kw)
        started.append(rv)
        if ready:
            rv.wait_ready()
        return rv

    yield start
    problems = []
    for rv in started:
        if rv.returncode is None:
            rc, _killed = rv.stop()
        else:
            rc = rv.returncode
        rep = rv.sanitizer_report()
        if rep:
            problems.append("rivet pid %d: sanitizer report:\n%s" % (rv.pid, rep))
        if rc is not None and rc < 0 and -rc in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS,
                                                 signal.SIGILL, signal.SIGFPE):
            problems.append("rivet pid %d died with signal %d\n--- stderr ---\n%s"
                            % (rv.pid, -rc, rv.stderr()[-4000:]))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for rv in getattr(item, "_rivets", []):
            err = rv.stderr()
            out = rv.stdout()
            rep.sections.append(("rivet pid %d stderr (last 6000 chars)" % rv.pid, err[-6000:] or "(empty)"))
            if out:
                rep.sections.append(("rivet pid %d stdout (last 3000 chars)" % rv.pid, out[-3000:]))
