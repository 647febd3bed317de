"""ptdistill.tracking's robustness: concurrent first use of a sqlite file, half-migrated files,
filter strings with any run name, terminal escapes, bounded HTTP retries, stale RUNNING parents
and the tracking pre-flight check. Against real MLflow stores (sqlite files, loopback servers).
"""

from __future__ import annotations

import http.server
import json
import multiprocessing
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from mlflow.exceptions import MlflowException

from ptdistill.tracking import (
    FAILURE_TAG,
    HOST_TAG,
    PID_TAG,
    RUN_NAME_TAG,
    RUNNER_PID_ENV,
    RunNameInUseError,
    Tracker,
    TrackingStoreError,
    bounded_http,
    check_tracking_uri,
    clean_text,
)

# slow: MLflow SQLite stores, several processes opening one file.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(
    # MLflow's own SQLAlchemy mapping (mlflow 3.17) uses the deprecated ``noload`` strategy.
    "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning",
)]


def _tables(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return sorted(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete store made by one process (this one); copy it, never write to it."""
    db = tmp_path_factory.mktemp("good") / "mlflow.db"
    Tracker(f"sqlite:///{db}")
    return db


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")


def _parent(tracker: Tracker, benchmark: str, run_name: str) -> str:
    return tracker.start_parent(benchmark, run_name, tags={RUN_NAME_TAG: run_name}, params={})


# -- concurrent first use, half-migrated files -------------------------------------------------


def _open_at_barrier(uri: str, barrier: multiprocessing.synchronize.Barrier, benchmark: str) -> None:
    barrier.wait()
    Tracker(uri).experiment_id(benchmark)


def test_processes_opening_a_fresh_sqlite_file_at_once_all_succeed_with_a_whole_schema(
    tmp_path: Path, good_db: Path
) -> None:
    db = tmp_path / "fresh" / "mlflow.db"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    procs = [context.Process(target=_open_at_barrier, args=(f"sqlite:///{db}", barrier, f"b{i}")) for i in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=600)
    assert [proc.exitcode for proc in procs] == [0, 0]
    tables = _tables(db)
    assert tables == _tables(good_db)
    assert len(tables) > 50
    assert not [name for name in tables if name.startswith("_alembic_tmp_")]
    assert sorted(e.name for e in Tracker(f"sqlite:///{db}").client.search_experiments()) == [
        "Default", "ptdistill-b0", "ptdistill-b1"]
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db", "mlflow.db.lock"]  # no temporary file left


def test_a_stray_schema_file_of_a_killed_process_is_removed(tmp_path: Path) -> None:
    stray = tmp_path / ".mlflow.db.999999.creating"
    stray.write_bytes(b"half a schema")
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not stray.exists()
    assert "experiments" in _tables(tmp_path / "mlflow.db")


def test_half_migrated_file_is_refused_naming_the_file(tmp_path: Path, good_db: Path) -> None:
    db = tmp_path / "half.db"
    shutil.copy(good_db, db)
    with sqlite3.connect(db) as conn:  # what two racing migrations left behind
        conn.execute("CREATE TABLE _alembic_tmp_metrics (key VARCHAR(250))")
    for attempt in (lambda: Tracker(f"sqlite:///{db}"), lambda: check_tracking_uri(f"sqlite:///{db}")):
        with pytest.raises(TrackingStoreError) as err:
            attempt()
        message = str(err.value)
        assert f"tracking database {db} is half-migrated" in message
        assert "_alembic_tmp_metrics" in message
        assert f"mv '{db}' '{db}.broken'" in message


def test_a_file_mlflow_cannot_open_is_named_with_what_to_do(tmp_path: Path, good_db: Path) -> None:
    db = tmp_path / "unstamped.db"
    shutil.copy(good_db, db)
    with sqlite3.connect(db) as conn:  # tables without a schema version: MLflow refuses it
        conn.execute("DROP TABLE alembic_version")
    with pytest.raises(TrackingStoreError) as err:
        Tracker(f"sqlite:///{db}")
    assert str(err.value).startswith(f"MLflow cannot open the tracking database {db} (")
    assert f"mlflow db upgrade sqlite:///{db}" in str(err.value)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TrackingStoreError, match=f"tracking database {garbage} cannot be read"):
        Tracker(f"sqlite:///{garbage}")


# -- filter strings, escapes -----------------------------------------------------------------

NAMES = ["bob's run", 'say "hi"', "back`tick", "100%", "a_b", "a%b", "two  spaces", "naïve-ünï-日本", "it''s",
         "bob_s run", "abc"]


def test_fail_runs_fails_exactly_the_parents_of_that_name(tracker: Tracker) -> None:
    parents = {name: _parent(tracker, "bench-names", name) for name in NAMES}
    finished = _parent(tracker, "bench-names", "bob's run")
    tracker.finish_parent(finished)
    for i, name in enumerate(NAMES):
        assert tracker.fail_runs("bench-names", name, "crashed") == [parents[name]]
        status = {n: tracker.client.get_run(run_id).info.status for n, run_id in parents.items()}
        assert status == {n: "FAILED" if j <= i else "RUNNING" for j, n in enumerate(NAMES)}
    assert tracker.client.get_run(finished).info.status == "FINISHED"
    assert tracker.fail_runs("bench-names", "bob's run", "again") == []
    assert tracker.fail_runs("never-run", "bob's run", "crashed") == []
    frame = tracker.latest_students("bench-names", run_names=["bob's run", "a%b"])
    assert frame.empty  # the parents have no students; the names did not break the search


def test_clean_text_strips_terminal_escapes_and_control_characters() -> None:
    kfp_line = "\x1b[31m\x1b[1mERROR\x1b[0m:root:Task \x1b[96m'train-teacher'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m\r"
    assert clean_text(kfp_line) == "ERROR:root:Task 'train-teacher' finished with status FAILURE"
    assert clean_text("\x1b]0;title\x07a\tb\nc\x00\x7f\x1b(B") == "a\tb\nc"
    assert clean_text(3.5) == "3.5"
    assert clean_text(repr(RuntimeError(kfp_line))) == (
        "RuntimeError(\"ERROR:root:Task 'train-teacher' finished with status FAILURE\\r\")")


def test_nothing_written_to_mlflow_carries_escapes(tracker: Tracker) -> None:
    name = "\x1b[32mcoloured run\x1b[0m"
    parent = tracker.start_parent("bench-ansi", name, tags={RUN_NAME_TAG: name, "note": "\x1b[1mbold\x1b[0m"},
                                  params={"path": "\x1b[4mdata.csv\x1b[0m", "grid": ["\x1b[31mx\x1b[0m"]})
    tracker.fail_parent(parent, "RuntimeError: \x1b[91mTask train-teacher failed\x1b[0m\x1b[K")
    run = tracker.client.get_run(parent)
    assert run.info.run_name == "coloured run"
    assert run.data.tags["note"] == "bold"
    assert run.data.tags[FAILURE_TAG] == "RuntimeError: Task train-teacher failed"
    assert run.data.params == {"path": "data.csv", "grid": '["x"]'}
    other = _parent(tracker, "bench-ansi", name)
    assert tracker.fail_runs("bench-ansi", name, "x") == [other]  # the raw name still finds its cleaned parent


# -- bounded HTTP, pre-flight --------------------------------------------------------------------


@pytest.fixture
def hanging_up_server() -> Iterator[tuple[str, list[int]]]:
    """A loopback port that accepts each connection and closes it at once; counts attempts."""
    listener = socket.create_server(("127.0.0.1", 0))
    attempts: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            attempts.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", attempts
    listener.close()



def test_bounded_http_limits_attempts_and_restores_the_environment(
    hanging_up_server: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, attempts = hanging_up_server
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    with bounded_http(max_retries=1, timeout_s=5), pytest.raises(MlflowException, match="API request to"):
        Tracker(uri).fail_runs("bench", "bob's run", "crashed")
    assert len(attempts) == 2  # one try and one retry, not MLflow's 1 + 7 with back-off
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    with bounded_http(max_retries=0), pytest.raises(MlflowException):
        Tracker(f"http://127.0.0.1:{free_port()}").fail_runs("bench", "run", "crashed")


class _FakeMlflowServer(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = json.dumps({"experiments": []}).encode() if "/experiments/search" in self.path else b"{}"
        self.send_response(200 if "/experiments/search" in self.path else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_check_tracking_uri_http(hanging_up_server: tuple[str, list[int]]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingStoreError, match=f"^MLflow tracking server {dead} does not answer: "):
        check_tracking_uri(dead)
    uri, attempts = hanging_up_server
    with pytest.raises(TrackingStoreError, match=f"^MLflow tracking server {uri} does not answer"):
        check_tracking_uri(uri)
    assert len(attempts) == 1  # no retries
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeMlflowServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_tracking_uri(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()


def test_check_tracking_uri_sqlite(tmp_path: Path, good_db: Path) -> None:
    check_tracking_uri(f"sqlite:///{tmp_path}/new/deeper/mlflow.db")  # creatable
    assert not (tmp_path / "new").exists()  # and nothing created
    check_tracking_uri(f"sqlite:///{good_db}")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(TrackingStoreError, match="cannot be created: .*a-file is not a writable folder"):
        check_tracking_uri(f"sqlite:///{tmp_path}/a-file/mlflow.db")
    with pytest.raises(TrackingStoreError, match="is a directory"):
        check_tracking_uri(f"sqlite:///{tmp_path}")


# -- stale RUNNING parents ---------------------------------------------------------------------


def _parent_of_runner(tracker: Tracker, benchmark: str, run_name: str, pid: int, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(RUNNER_PID_ENV, str(pid))
    return _parent(tracker, benchmark, run_name)


def test_stale_parent_of_a_dead_runner_is_failed_on_re_run(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = _parent_of_runner(tracker, "bench-stale", "bob's run", gone.pid, monkeypatch)
    mine = _parent_of_runner(tracker, "bench-stale", "bob's run", os.getpid(), monkeypatch)  # an earlier run here
    other = _parent_of_runner(tracker, "bench-stale", "another run", gone.pid, monkeypatch)
    run = tracker.client.get_run(stale)
    assert (run.data.tags[HOST_TAG], run.data.tags[PID_TAG]) == (socket.gethostname(), str(gone.pid))
    assert sorted(tracker.supersede_stale_runs("bench-stale", "bob's run")) == sorted([stale, mine])
    run = tracker.client.get_run(stale)
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILURE_TAG] == (
        f"stale: its process {gone.pid} on {socket.gethostname()} is gone; superseded by a re-run")
    assert tracker.client.get_run(other).info.status == "RUNNING"
    assert tracker.supersede_stale_runs("bench-stale", "bob's run") == []
    assert tracker.supersede_stale_runs("never-run", "bob's run") == []


def test_re_run_is_refused_while_the_runner_lives_or_cannot_be_checked(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live = _parent_of_runner(tracker, "bench-live", "run-1", alive.pid, monkeypatch)
        with pytest.raises(RunNameInUseError) as err:
            tracker.supersede_stale_runs("bench-live", "run-1")
        assert f"MLflow parent run {live} (ptdistill-bench-live) is RUNNING" in str(err.value)
        assert f"its process {alive.pid} on this host ({socket.gethostname()}) is still running" in str(err.value)
        assert tracker.client.get_run(live).info.status == "RUNNING"
    finally:
        alive.kill()
        alive.wait()
    elsewhere = _parent_of_runner(tracker, "bench-elsewhere", "run-1", 1, monkeypatch)
    tracker.set_tags(elsewhere, {HOST_TAG: "other-host"})
    monkeypatch.delenv(RUNNER_PID_ENV)
    untagged = _parent(tracker, "bench-untagged", "run-1")
    assert HOST_TAG not in tracker.client.get_run(untagged).data.tags
    for benchmark, run_id, where in [("bench-elsewhere", elsewhere, "on host other-host"),
                                     ("bench-untagged", untagged, "outside a local runner")]:
        with pytest.raises(RunNameInUseError, match=f"started {where}, so ptdistill cannot tell") as err:
            tracker.supersede_stale_runs(benchmark, "run-1")
        assert f".set_terminated('{run_id}', 'FAILED')" in str(err.value)
        assert tracker.client.get_run(run_id).info.status == "RUNNING"


def test_check_tracking_uri_database_store_that_cannot_be_opened_is_one_line():
    """A database URI whose driver is missing (or whose server is down) fails the pre-flight by name."""
    uri = f"postgresql://user@127.0.0.1:{free_port()}/mlflow"
    with pytest.raises(TrackingStoreError) as info:
        check_tracking_uri(uri)
    message = str(info.value)
    assert message.startswith(f"tracking store {uri} cannot be opened (")
    assert message.endswith("): install its database driver, start the database or check the URI")
    assert "\n" not in message
