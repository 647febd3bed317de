"""What ``ptdistill run`` prints (pipelines/console.py): a line per task, throttled progress, logs in files.

The unit tests drive :class:`TaskConsole` with a stand-in for kfp.local's
``execute_single_task`` that writes what a real task writes (kfp.local's log records, executor
JSON, tqdm lines) from the caller's thread and from worker threads, as kfp.local's ParallelFor
does. The pipeline tests read what the ``local_pipeline`` and ``failing_pipeline`` runs
(tests/conftest.py) printed and left under their pipeline root.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from kfp.local import status
from kfp.local.orchestrator import task_executor

from pipelines.console import (PIPELINE_LOG, PROGRESS_SECONDS, TaskConsole, cache_text, progress_text,
                               student_text)

from conftest import DISTILL_FAILURE

EXECUTOR_JSON = json.dumps({"inputs": {"parameterValues": {"config": "{}"}}}, indent=4)


def test_progress_text_reads_tqdm_lines():
    assert progress_text("    student ptloss:  50%|#####     | 4/8 [00:02<00:02,  1.9epoch/s, loss=0.4, val_acc=0.8]") \
        == "student ptloss 4/8, loss=0.4, val_acc=0.8, 00:02 left"
    assert progress_text("teacher:  12%|#         | 1/8 [00:01<00:07, 1.0s/epoch]") == "teacher 1/8, 00:07 left"
    assert progress_text("teacher:   0%|          | 0/8 [00:00<?, ?epoch/s]") is None
    assert progress_text("proxy search (random): 100%|██████████| 30/30 [00:01<00:00, 25.1cand/s]") \
        == "proxy search (random) 30/30"
    assert progress_text('[KFP Executor 2026-11-29 21:46:37,643 INFO]: teacher_train: 600 examples') is None
    assert progress_text('    "metadata": {"percent": "50%|"}') is None


def test_cache_text_from_output_metadata():
    art = lambda **meta: SimpleNamespace(metadata=meta)  # noqa: E731 - an artifact is all the function reads
    assert cache_text({"teacher": art(cache="hit", teacher_id="mlp:1")}) == "cache hit"
    assert cache_text({"distill_probs": art(cache="miss"), "test_probs": art(cache="miss"),
                       "teacher_report": art()}) == "cache miss"
    assert cache_text({"distill_probs": art(cache="hit"), "test_probs": art(cache="miss")}) \
        == "cache distill_probs hit, test_probs miss"
    assert cache_text({"teacher": art(cache="off"), "Output": "{}"}) == ""


def test_student_text_from_output_metadata():
    assert student_text({"student": SimpleNamespace(metadata={"method": "ptloss", "seed": 0})}) == "ptloss seed 0"
    assert student_text({"student": SimpleNamespace(metadata={"method": "kl", "seed": 3.0})}) == "kl seed 3"
    assert student_text({"search": SimpleNamespace(metadata={"order": 1}), "Output": "{}"}) == ""


class FakeClock:
    """Seconds that pass only when a task says so, separately in each thread."""

    def __init__(self) -> None:
        self._now: dict[int, float] = {}

    def advance(self, seconds: float) -> None:
        self._now[threading.get_ident()] = self() + seconds

    def __call__(self) -> float:
        return self._now.get(threading.get_ident(), 0.0)


def _fake_task(clock: FakeClock, fail: set[str]):
    """A stand-in for ``execute_single_task``: writes like a kfp.local task, fails when named in ``fail``."""

    def execute_single_task(task_name: str, task_spec=None, pipeline_resource_name: str = "p",
                            components=None, executors=None, io_store=None, pipeline_root=None, runner=None,
                            unique_pipeline_id=None, fail_stack=None):
        handler = logging.StreamHandler(sys.stdout)  # kfp.local's logger context makes one per task
        # Only this thread's records: two tasks in parallel each add a handler to the root logger,
        # and a record would otherwise reach both (a task's log would show it twice when they overlap).
        handler.addFilter(lambda record, ident=threading.get_ident(): record.thread == ident)
        logging.getLogger().addHandler(handler)
        try:
            logging.getLogger().warning("Executing task %r", task_name)
            print(f"    [KFP Executor] Got executor_input:\n{EXECUTOR_JSON}")
            for epoch in range(1, 5):
                clock.advance(PROGRESS_SECONDS / 2)  # a line is due every other epoch
                print(f"    {task_name}: {25 * epoch}%|##  | {epoch}/4 [00:0{epoch}<00:0{4 - epoch}, 1.0epoch/s, "
                      f"loss=0.{epoch}]")
            print(f"step of {task_name} says hello", file=sys.stderr)
            if task_name in fail:
                print(f"ValueError: {task_name} broke")
                return {}, status.Status.FAILURE
            return {"teacher": SimpleNamespace(metadata={"cache": "hit"})}, status.Status.SUCCESS
        finally:
            logging.getLogger().removeHandler(handler)

    return execute_single_task


@pytest.fixture
def console_run(tmp_path, monkeypatch):
    """Run named fake tasks through a TaskConsole: (console text, log dir, error raised or None)."""

    def run(names_in_threads: list[list[str]], fail: set[str] = frozenset(), verbose: bool = False):
        clock, out, stream = FakeClock(), io.StringIO(), io.StringIO()
        monkeypatch.setattr(task_executor, "execute_single_task", _fake_task(clock, set(fail)))
        monkeypatch.setattr(sys, "stdout", stream)
        monkeypatch.setattr(sys, "stderr", stream)
        error = None
        try:
            with TaskConsole(tmp_path / "logs", verbose=verbose, out=out, clock=clock):
                print("Running pipeline (kfp.local, outside any task)")
                for group in names_in_threads:
                    threads = [threading.Thread(target=task_executor.execute_single_task,
                                                kwargs={"task_name": name, "pipeline_resource_name":
                                                        f"p/for-loop-2-iteration-{i}"})
                               for i, name in enumerate(group)]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                task_executor.execute_single_task(task_name="report", pipeline_resource_name="p")
                if fail:
                    raise RuntimeError("Pipeline finished with status FAILURE.")
        except RuntimeError as err:
            error = err
        assert sys.stdout is stream and sys.stderr is stream and task_executor.execute_single_task.__name__ == "execute_single_task"
        return out.getvalue() + stream.getvalue(), tmp_path / "logs", error

    return run


def test_one_line_per_task_and_full_logs_in_files(console_run):
    text, logs, error = console_run([["distill-student", "distill-student"]])
    assert error is None
    lines = text.splitlines()
    done = [line for line in lines if " done " in line]
    assert len(done) == 3, text
    for name in ("distill-student-0", "distill-student-1", "report"):
        (line,) = [line for line in done if f" {name} " in line]
        assert re.match(r"\d\d:\d\d:\d\d-\d\d:\d\d:\d\d  ", line), line
        assert "cache hit" in line and line.endswith(f"log: {logs / f'{name}.log'}")
        log = (logs / f"{name}.log").read_text()
        # The whole stream of the task, stdout and stderr, and nothing of the other tasks.
        assert EXECUTOR_JSON in log and f"step of {name.rsplit('-', 1)[0]} says hello" in log
        assert "Executing task" in log and log.count("Executing task") == 1
    assert "Running pipeline" in (logs / PIPELINE_LOG).read_text()
    assert "Running pipeline" not in text and "executor_input" not in text and "parameterValues" not in text
    # Two progress lines per task (every PROGRESS_SECONDS of the fake clock), bar graphics dropped.
    progress = [line for line in lines if "loss=" in line]
    assert len(progress) == 6, text
    assert any(re.search(r" report +report 2/4, loss=0.2, 00:02 left$", line) for line in progress), progress


def test_failed_task_line_names_its_log_and_shows_its_tail(console_run):
    text, logs, error = console_run([["distill-student", "evaluate"]], fail={"evaluate"})
    (line,) = [line for line in text.splitlines() if " FAILED " in line]
    assert " evaluate-1 " in line and line.endswith(f"log: {logs / 'evaluate-1.log'}")
    assert "    | ValueError: evaluate broke" in text
    assert isinstance(error, RuntimeError)
    assert str(error) == f"Pipeline finished with status FAILURE. Log: {logs / 'evaluate-1.log'}"


def test_a_task_ending_after_the_console_closed_prints_nothing(tmp_path, monkeypatch):
    """After a signal the runner ends the tasks still running and the console is gone: their FAILED
    lines and log tails would bury the run's one-line message, so they are not printed."""
    clock, out = FakeClock(), io.StringIO()
    monkeypatch.setattr(task_executor, "execute_single_task", _fake_task(clock, {"distill-student"}))
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    started, release = threading.Event(), threading.Event()
    with TaskConsole(tmp_path / "logs", out=out, clock=clock):
        wrapped = task_executor.execute_single_task

        def straggler():
            started.set()
            release.wait()
            wrapped(task_name="distill-student", pipeline_resource_name="p/for-loop-2-iteration-0")

        thread = threading.Thread(target=straggler)
        thread.start()
        started.wait()
    release.set()
    thread.join()
    assert out.getvalue() == ""


def test_verbose_streams_everything_and_still_writes_the_logs(console_run):
    text, logs, _ = console_run([["distill-student"]], verbose=True)
    assert EXECUTOR_JSON in text and "Running pipeline" in text and "step of report says hello" in text
    assert " done " not in text
    assert EXECUTOR_JSON in (logs / "report.log").read_text()


def test_log_paths_are_shown_relative_to_the_working_directory(console_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, _, _ = console_run([])
    assert text.rstrip().endswith("log: logs/report.log")


# --------------------------------------------------------------------------- real pipeline runs


def test_pipeline_run_prints_a_line_per_task_and_no_executor_json(local_pipeline):
    printed = local_pipeline.log.read_text(errors="replace")
    assert "executor_input" not in printed and "parameterValues" not in printed and "[KFP Executor" not in printed
    tasks = ("prepare-data", "train-teacher", "teacher-inference", "proxy-search", "distill-student-0",
             "distill-student-1", "evaluate-0", "evaluate-1", "report")
    for run_name, teacher_cache in (("local-1", "cache miss"), ("local-2", "cache hit")):
        logs = Path(local_pipeline.pipeline_root) / "logs" / run_name
        for task in tasks:
            log = logs / f"{task}.log"
            (line,) = [line for line in printed.splitlines() if line.endswith(f"log: {log}")]
            assert f" {task} " in line and " done " in line, line
            if task in ("train-teacher", "teacher-inference"):
                assert teacher_cache in line, line
            if task.startswith("distill-student"):
                assert re.search(r" (ptloss|kl) seed 0 ", line), line
            text = log.read_text()
            assert "executor_input" in text and "Wrote executor output file" in text, task
        assert "teacher outputs for test" in (logs / "teacher-inference.log").read_text()
    assert len([line for line in printed.splitlines() if " done " in line]) == 2 * len(tasks)


def test_failed_pipeline_task_line_and_error_name_the_log(failing_pipeline):
    (outcome,) = failing_pipeline.outcomes
    printed = failing_pipeline.log.read_text(errors="replace")
    log = Path(failing_pipeline.pipeline_root) / "logs" / "failing-1" / "distill-student-0.log"
    (line,) = [line for line in printed.splitlines() if " FAILED " in line]
    assert " distill-student-0 " in line and line.endswith(f"log: {log}")
    assert str(log) in outcome["error"]
    assert DISTILL_FAILURE in log.read_text()


@pytest.mark.parametrize("flag, verbose", [([], False), (["--verbose"], True), (["-v"], True)])
def test_run_passes_verbose_to_run_local(flag, verbose, monkeypatch, tmp_path, capsys):
    import pipelines.local
    from ptdistill.cli import main

    seen = {}

    def run_local(config, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stopped here")

    monkeypatch.setattr(pipelines.local, "run_local", run_local)
    code = main(["run", "synthetic", "--quick", "--pipeline-root", str(tmp_path / "runs"), "--tracking-uri",
                 f"sqlite:///{tmp_path / 'mlflow.db'}", *flag])
    assert code != 0 and "stopped here" in capsys.readouterr().err
    assert seen["verbose"] is verbose


def test_the_root_logger_is_as_before_after_overlapping_tasks_swap_its_handlers(tmp_path, monkeypatch):
    """kfp.local's per-task logger context, overlapped as two parallel tasks can, leaks a handler.

    Task A saves the root's handlers, B saves A's handler, A restores, B restores A's handler and
    level INFO: without the console putting the root back, that handler on the console's stdout
    stand-in outlived the run and wrote every later INFO record of the process into a closed log.
    """
    from kfp.local.logging_utils import local_logger_context

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(root, "level", logging.WARNING)
    before = root.handlers[:]
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with TaskConsole(tmp_path / "logs", out=io.StringIO()):
        task_a, task_b = local_logger_context(), local_logger_context()
        task_a.__enter__()
        task_b.__enter__()
        task_a.__exit__(None, None, None)
        task_b.__exit__(None, None, None)
        assert root.level == logging.INFO and len(root.handlers) == 1 and root.handlers != before  # the leak
    assert root.handlers == before and root.level == logging.WARNING
    logging.getLogger("kfp.client").info("after the run")  # no '--- Logging error ---', nothing written
