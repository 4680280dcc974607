"""Fixtures for Petrel's integration tests.

Every test gets its own daemon(s) in its own tmp dir on a free port:

    def test_x(petrel):                       # default config, started
    def test_y(petrel_factory):
        p = petrel_factory(listen={"pipelining": "no"}, relay={...}, top={...})
        p = petrel_factory(start=False, ...)  # configure, then p.start()

A key set to None is removed from the config. The daemon is stopped at
teardown; a daemon that died during the test makes the test fail.
Each test is bounded by a watchdog (SIGALRM, TEST_TIMEOUT seconds).
"""

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from petrel_helpers import Petrel  # noqa: E402

TEST_TIMEOUT = 90


class WatchdogTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _watchdog():
    def on_alarm(signum, frame):
        raise WatchdogTimeout(f"test exceeded {TEST_TIMEOUT}s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def petrel_factory(tmp_path, request):
    made = []

    def make(start=True, **kw):
        p = Petrel(tmp_path / f"petrel{len(made)}", **kw)
        made.append(p)
        if start:
            p.start()
        return p

    yield make

    problems = []
    for p in made:
        died = p.cleanup()
        if died is not None:
            problems.append(f"{p.dir.name}: daemon died or hung: {died}\n{p.diag()}")
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for p in made:
            print(f"==== {p.dir.name} config ====\n{p.config_text()}\n{p.diag()}")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def petrel(petrel_factory):
    return petrel_factory()
