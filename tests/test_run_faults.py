"""Faults injected into local runs: kill signals, a tracking server or a store that is down during
the clean-up, kept checkpoints, generated run names, stray modules in the working directory."""


import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import free_port, tiny_synthetic

from pipelines.cleanup import clean_up
from pipelines.local import run_local
from pipelines.signals import RunInterrupted
from ptdistill.steps.common import check_run_name, new_run_name
from ptdistill.storage import LocalStore, open_store
from ptdistill.tracking import FAILURE_TAG, RunNameInUseError, Tracker

REPO = Path(__file__).resolve().parent.parent
BENCHMARK = "synthetic"
#: A line the task process itself prints (to its log file) once distill_student's executor has started.
STUDENT_RUNNING = "Looking for component `distill_student`"


def _student_started(logs: Path) -> bool:
    """Whether a distill_student task has started: its line in the task's log file (the console
    shows a task's line only when it ends)."""
    return any(STUDENT_RUNNING in log.read_text(errors="replace") for log in logs.glob("distill-student-*.log"))


def _parents(tracking_uri: str, run_name: str) -> list:
    tracker = Tracker(tracking_uri)
    experiment = tracker.experiment_id(BENCHMARK, create=False)
    assert experiment is not None
    return [r for r in tracker.client.search_runs([experiment], "tags.`ptdistill.role` = 'parent'")
            if r.data.tags.get("kfp.run_name") == run_name]


def _start_parent(tracking_uri: str, run_name: str) -> str:
    return Tracker(tracking_uri).start_parent(BENCHMARK, run_name, {"kfp.run_name": run_name}, {})


def _fill(store_uri: str, run_name: str) -> tuple[set[str], set[str]]:
    """Objects of a run (some of them checkpoints), of another run and of the teacher cache;
    returns (the checkpoint keys, the keys that are not the run's)."""
    store = open_store(store_uri)
    prefix = f"{BENCHMARK}/{run_name}"
    checkpoints = {f"{prefix}/checkpoints/kl-seed0/latest.json", f"{prefix}/checkpoints/kl-seed0/ckpt-e0-b2-s2.pt",
                   f"{prefix}/checkpoints/teacher/latest.json"}
    others = {f"{BENCHMARK}/{run_name}-2/teacher/model.pt", "cache/teacher/abc/entry.json"}
    for key in {f"{prefix}/teacher/model.pt", f"{prefix}/search/search.json", f"{prefix}/students/kl-seed0/x.pt",
                *checkpoints, *others}:
        store.write_text(key, "x")
    return checkpoints, others


# --------------------------------------------------------------------------- kill signals


def _session_processes(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid`` (the CLI was started as the leader of its own session)."""
    alive = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getsid(process.pid) == sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (ProcessLookupError, PermissionError):
            pass
    return alive


@pytest.mark.pipeline
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_distill_student_ends_tasks_and_cleans_up(tmp_path, sig):
    root, cwd, tracking_uri = tmp_path / "runs", tmp_path / "cwd", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cwd.mkdir()
    run_name = f"killed-{sig.name}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        # Its own session, so the signal reaches the CLI only (as `kill PID` does), not its tasks.
        cli = subprocess.Popen([sys.executable, "-m", "ptdistill", "run", BENCHMARK, "--quick", "--pipeline-root",
                                str(root), "--tracking-uri", tracking_uri, "--run-name", run_name],
                               cwd=cwd, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not _student_started(root / "logs" / run_name):
            assert cli.poll() is None, f"the run ended before distill_student:\n{err.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "distill_student never started"
            time.sleep(0.5)
        assert psutil.Process(cli.pid).children(recursive=True), "no task process to end"
        cli.send_signal(sig)
        code = cli.wait(timeout=300)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    stderr_text = err.read_text(errors="replace")
    assert code == 128 + sig, stderr_text[-3000:]
    assert "Traceback" not in stderr_text
    assert stderr_text.strip().splitlines() == [stderr_text.strip()], stderr_text
    assert stderr_text.startswith(f"ptdistill run {BENCHMARK}: interrupted by {sig.name}; clean-up: "
                                  "MLflow parent marked FAILED; "), stderr_text
    assert _session_processes(cli.pid) == []
    (parent,) = _parents(tracking_uri, run_name)
    assert parent.info.status == "FAILED"
    assert parent.data.tags[FAILURE_TAG] == f"RunInterrupted: interrupted by {sig.name}"
    client = Tracker(tracking_uri).client
    assert client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'") == []
    store = open_store(str(root))
    assert store.list(f"{BENCHMARK}/") == []
    assert list(root.glob("ptdistill-*")) == []  # kfp.local's scratch copies of the run
    assert store.list("cache/teacher/"), "the teacher cache was deleted"
    assert sorted(p.name for p in cwd.iterdir()) == []


#: kfp.local's way of running tasks, in small: each in a subprocess (here with a grandchild) started
#: from a thread pool whose shutdown waits for running and queued items.
POOL_OF_TASKS = """
import concurrent.futures, json, os, signal, subprocess, sys, time
from pipelines.signals import RunInterrupted, StopOnSignals

procs = []

def task():
    procs.append(subprocess.Popen(["sh", "-c", "sleep 300 & wait"]))
    return procs[-1].wait()

try:
    with StopOnSignals():
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(task) for _ in range(5)]
            while len(procs) < 2:
                time.sleep(0.05)
            os.kill(os.getpid(), getattr(signal, sys.argv[1]))
            time.sleep(300)
except RunInterrupted as err:
    print(json.dumps([err.exit_code, [p.returncode for p in procs]]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_ends_running_and_queued_tasks(sig):
    runner = subprocess.Popen([sys.executable, "-c", POOL_OF_TASKS, sig.name], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = runner.communicate(timeout=300)
    code, returncodes = json.loads(out)
    assert code == 128 + sig, err
    assert len(returncodes) == 5 and all(rc < 0 for rc in returncodes), returncodes  # each ended by a signal
    assert _session_processes(runner.pid) == []


# --------------------------------------------------------------------------- clean-up: best effort, bounded



def test_clean_up_cleans_the_store_when_the_tracking_server_is_down(tmp_path):
    tracking_uri = f"http://127.0.0.1:{free_port()}"
    checkpoints, others = _fill(str(tmp_path), "r1")
    line = clean_up(BENCHMARK, "r1", tracking_uri, str(tmp_path), "boom", seconds=3)
    assert set(LocalStore(tmp_path).list()) == checkpoints | others
    assert line.startswith(f"clean-up: could not mark the MLflow parent of run 'r1' FAILED ({tracking_uri}: ")
    assert "fail_parents(" in line and tracking_uri in line.split("when it answers, run `")[1]
    assert f"; 3 run objects deleted from {tmp_path}/{BENCHMARK}/r1/; 3 checkpoint objects kept: " \
           "a re-run with `--run-name r1` resumes" in line
    assert "\n" not in line


class _UndeletableStore(LocalStore):
    def delete(self, key: str) -> None:
        raise ConnectionError(f"store unreachable deleting {key}")


@pytest.mark.slow
def test_clean_up_marks_the_parent_failed_when_the_store_fails(tmp_path, monkeypatch):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = _start_parent(tracking_uri, "r1")
    monkeypatch.setattr("pipelines.cleanup.open_store", lambda uri, **kw: _UndeletableStore(tmp_path / "store"))
    _fill(str(tmp_path / "store"), "r1")
    line = clean_up(BENCHMARK, "r1", tracking_uri, "gs://bucket/prefix", "step failed")
    run = Tracker(tracking_uri).client.get_run(parent)
    assert run.info.status == "FAILED" and run.data.tags[FAILURE_TAG] == "step failed"
    assert line.startswith("clean-up: MLflow parent marked FAILED; could not delete the run's objects under "
                           f"gs://bucket/prefix/{BENCHMARK}/r1/ (OSError: 3 objects left: store unreachable deleting ")
    hand = line.split("when it answers, run `")[1]
    assert "delete_run_objects(" in hand and '"gs://bucket/prefix"' in hand
    assert "\n" not in line


@pytest.mark.slow
def test_clean_up_commands_finish_the_job_by_hand(tmp_path, monkeypatch):
    """The commands a failed clean-up prints do what the clean-up could not."""
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = _start_parent(tracking_uri, "r1")
    checkpoints, others = _fill(str(tmp_path / "store"), "r1")
    monkeypatch.setattr("pipelines.cleanup.open_store", lambda uri, **kw: _UndeletableStore(tmp_path / "store"))
    line = clean_up(BENCHMARK, "r1", f"http://127.0.0.1:{free_port()}", "gs://unreachable-bucket/p", "x",
                    seconds=2)
    commands = re.findall(r"when it answers, run `(.*?)`(?:;|$)", line)
    assert len(commands) == 2, line
    for command in commands:
        command = command.replace('"gs://unreachable-bucket/p"', json.dumps(str(tmp_path / "store")))
        command = re.sub(r'"http://127\.0\.0\.1:\d+"', json.dumps(tracking_uri), command)
        subprocess.run(command, shell=True, check=True, cwd=REPO, timeout=300)
    assert Tracker(tracking_uri).client.get_run(parent).info.status == "FAILED"
    assert set(LocalStore(tmp_path / "store").list()) == checkpoints | others


@pytest.mark.slow
def test_failed_run_clean_up_keeps_only_checkpoints_and_others(tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = _start_parent(tracking_uri, "r1")
    store = tmp_path / "store"
    checkpoints, others = _fill(str(store), "r1")
    scratch = tmp_path / "runs" / "ptdistill-synthetic-2026-11-29-23-40-00-000001"
    (scratch / "train-teacher").mkdir(parents=True)
    (scratch / "train-teacher" / "teacher").write_text("x")
    line = clean_up(BENCHMARK, "r1", tracking_uri, str(store), "failed", local_outputs=scratch)
    assert set(LocalStore(store).list()) == checkpoints | others
    assert list((tmp_path / "runs").iterdir()) == []  # kfp.local's copies of the failed run are gone too
    assert Tracker(tracking_uri).client.get_run(parent).info.status == "FAILED"
    assert line == (f"clean-up: MLflow parent marked FAILED; 3 run objects deleted from {store}/{BENCHMARK}/r1/; "
                    "3 checkpoint objects kept: a re-run with `--run-name r1` resumes")


# --------------------------------------------------------------------------- run names


def test_generated_run_names_differ_within_a_second_and_sort_by_time(monkeypatch):
    strftime = time.strftime

    def at(second: int) -> None:
        moment = time.struct_time((2026, 11, 29, 21, 45, second, 6, 333, 0))
        monkeypatch.setattr(time, "strftime", lambda fmt, t=moment: strftime(fmt, moment))

    at(7)
    same_second = [new_run_name(BENCHMARK) for _ in range(100)]  # 32 random bits: a repeat once in ~10^6 tries
    assert len(set(same_second)) == 100
    assert all(re.fullmatch(r"synthetic-20261129-214507-[0-9a-f]{8}", name) for name in same_second)
    at(8)
    later = new_run_name(BENCHMARK)
    assert max(same_second) < later


# --------------------------------------------------------------------------- the working directory


STRAY_MODULES = {
    # A user's script: run as a module by mistake, it writes to the file named first on the command line.
    "inspect.py": "import sys\nopen(sys.argv[1], 'w').close()\nraise ImportError('stray inspect.py imported')\n",
    "random.py": "raise ImportError('stray random.py imported')\n",
}


def test_tasks_do_not_import_modules_from_the_working_directory(tmp_path, monkeypatch):
    from kfp import dsl, local

    from pipelines.local import _task_environment

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def add_one(x: int) -> str:
        """x + 1, and the runner pid the task was given (both modules are the standard ones)."""
        import inspect
        import os
        import random

        return f"{x + 1 + random.randint(0, 0)} {inspect.isfunction(add_one)} {os.environ['PTDISTILL_RUNNER_PID']}"

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def fail() -> None:
        raise ValueError("this task fails")

    before = os.environ.get("PYTHONSAFEPATH")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name, text in STRAY_MODULES.items():
        (cwd / name).write_text(text)
    monkeypatch.chdir(cwd)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    with _task_environment():
        assert add_one(x=41).output == f"42 True {os.getpid()}"
        with pytest.raises(RuntimeError, match="fail"):
            fail()
    assert sorted(p.name for p in cwd.iterdir()) == sorted(STRAY_MODULES)
    assert os.environ.get("PYTHONSAFEPATH") == before  # only the tasks' environment


# --------------------------------------------------------------------------- what `ptdistill run` prints


@pytest.mark.parametrize("error, code", [(RuntimeError("Task 'distill-student' finished with status FAILURE"), 1),
                                         (RunInterrupted(signal.SIGTERM), 143), (RunInterrupted(signal.SIGINT), 130)])
def test_run_prints_the_clean_up_line_and_exits_with_the_signal_code(tmp_path, monkeypatch, capsys, error, code):
    from ptdistill.cli import main

    note = "clean-up: MLflow parent marked FAILED; 2 run objects deleted from /x/synthetic/r/"

    def run_local(*args, **kwargs):
        error.add_note(note)
        raise error

    monkeypatch.setattr("pipelines.local.run_local", run_local)
    assert main(["run", BENCHMARK, "--quick", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == code
    stderr = capsys.readouterr().err.splitlines()
    if isinstance(error, RunInterrupted):
        assert stderr == [f"ptdistill run {BENCHMARK}: interrupted by {signal.Signals(error.signum).name}; {note}"]
    else:
        assert stderr == [f"ptdistill run {BENCHMARK}: failed: {error}", note]


# --------------------------------------------------------------------------- run names


@pytest.mark.parametrize("name, problem", [
    ("a/b", "it contains a path separator"), ("..", "it starts with '.'"), (".hidden", "it starts with '.'"),
    ("x" * 101, "it has 101 characters"), ("two\nlines", "it contains a control character"), (" ", "it is empty"),
])
def test_a_run_name_that_cannot_name_a_run_is_refused_before_any_work(tmp_path, name, problem):
    with pytest.raises(ValueError) as info:
        run_local(tiny_synthetic(), pipeline_root=tmp_path / "runs", tracking_uri=f"sqlite:///{tmp_path}/m.db",
                  run_name=name)
    assert str(info.value) == (f"--run-name {name!r}: {problem}; expected at most 100 printable characters, "
                               "no '/' or '\\', not starting with '.'")
    assert list(tmp_path.iterdir()) == []


def test_names_with_quotes_spaces_and_unicode_are_kept_as_written():
    for name in ("bob's run", 'say "hi"', "run 🚀 ü", "x" * 100):
        assert check_run_name(name) == name


def test_a_second_run_of_a_name_still_running_is_refused_at_once(tmp_path):
    """The MLflow check sees a run only once its parent exists; the pipeline root's lock sees it from its start."""
    lock = tmp_path / "runs" / "locks" / f"{BENCHMARK}--bob's run.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(300)",
                               str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunNameInUseError) as info:
            run_local(tiny_synthetic(), pipeline_root=tmp_path / "runs", tracking_uri=f"sqlite:///{tmp_path}/m.db",
                      run_name="bob's run")
    finally:
        holder.kill()
        holder.wait()
    assert str(info.value) == (f"run \"bob's run\" of {BENCHMARK} is already running from this pipeline root (it "
                               f"holds {lock}): choose another --run-name, or wait for it to end")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no tracking store opened, nothing written
