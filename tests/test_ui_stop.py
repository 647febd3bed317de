"""``ptdistill ui`` stopped by Ctrl-C or SIGTERM leaves no process behind (ptdistill/servers.py).

A real ``ptdistill ui`` on a fresh SQLite file and a free loopback port, with MLflow's job
runner on (its default: the huey consumers it starts are what outlived the server before), is
stopped with SIGINT once it answers ``/health``. It must exit with 130 (128 + SIGINT) and no
process of its tree (listed while it ran) nor of the server's session may be left. SIGTERM takes
the same path; it is checked on a small stand-in tree (a server that starts a child in a session
of its own and one in its group, both ignoring SIGTERM), which also exercises the SIGKILL after
the grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import free_port

# slow: real `ptdistill ui` servers and process trees.
pytestmark = pytest.mark.slow

SERVER_START_TIMEOUT = 300  # MLflow migrates a fresh SQLite file and imports a lot, on a busy 2-core box
STOP_TIMEOUT = 120  # the stop's own bound is servers.GRACE_SECONDS, then SIGKILL



def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - loopback only
            return response.status == 200
    except OSError:
        return False


def _session_members(sid: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid:
                found.append(process)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            pass
    return found


def test_ui_stops_its_whole_process_tree_on_sigint(tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        # Its own session, so the test can kill what is left without touching pytest's group.
        ui = subprocess.Popen([sys.executable, "-m", "ptdistill", "ui", "--port", str(port), "--tracking-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=tmp_path, env=env, stdout=out,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not _healthy(url):
            assert ui.poll() is None, f"ptdistill ui exited with {ui.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no /health after {SERVER_START_TIMEOUT} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        tree = psutil.Process(ui.pid).children(recursive=True)
        server_sessions = {os.getsid(p.pid) for p in tree} - {ui.pid}
        names = " ".join(" ".join(p.cmdline()[:4]) for p in [psutil.Process(ui.pid), *tree])
        assert "mlflow server" in names and "uvicorn" in names and "huey" in names, names
        # SIGINT to ptdistill alone (kill -INT, a supervisor): with ``mlflow server`` exec'ed in its
        # place, only uvicorn heard of it and the job runner's huey consumers lived on.
        ui.send_signal(signal.SIGINT)
        code = ui.wait(timeout=STOP_TIMEOUT)
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert alive == [], [p.cmdline() for p in alive]
        left = [p for sid in server_sessions for p in _session_members(sid)]
        assert left == [], [p.cmdline() for p in left]
        assert not _healthy(url)
        assert code == 130, log.read_text()[-3000:]
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()


TREE = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"]
subprocess.Popen(stubborn, start_new_session=True)  # like MLflow's job processes
subprocess.Popen(stubborn)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_run_server_stops_a_stubborn_tree(tmp_path: Path, sig: int, code: int):
    ready = tmp_path / "ready"
    runner = (f"import sys; from ptdistill.servers import run_server; "
              f"sys.exit(run_server([sys.executable, '-c', {TREE!r}], {{}}, grace_seconds=1.0))")
    with open(ready, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", runner], stdout=out, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            tree = psutil.Process(process.pid).children(recursive=True)
            if len(tree) == 3 and ready.read_text().strip() == "ready":
                break
            assert process.poll() is None and time.monotonic() < deadline, ready.read_text()
            time.sleep(0.1)
        process.send_signal(sig)
        assert process.wait(timeout=STOP_TIMEOUT) == code
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert alive == [], [p.cmdline() for p in alive]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_ui_builds_the_sqlite_schema_under_the_store_lock_before_the_server_starts(tmp_path, monkeypatch):
    """mlflow server creates a schema without ptdistill's lock; a run opening the same fresh file at
    that moment raced it and left a broken file. ``ui`` builds it first, under the lock."""
    import sqlite3

    from ptdistill import cli

    db = tmp_path / "fresh.db"
    seen = {}

    def fake_server(cmd, env):
        with sqlite3.connect(db) as conn:
            seen["tables"] = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return 0

    monkeypatch.setattr("ptdistill.servers.run_server", fake_server)
    assert cli.main(["ui", "--tracking-uri", f"sqlite:///{db}"]) == 0
    assert {"experiments", "runs", "alembic_version"} <= seen["tables"]
    assert not any(name.startswith("_alembic_tmp_") for name in seen["tables"])
