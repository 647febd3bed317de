"""What ``ptdistill run`` prints while kfp.local runs a pipeline: a line per task, progress, logs in files.

kfp.local writes everything a task does to ``sys.stdout``, from the thread that runs the task
(ParallelFor iterations run in worker threads, the rest in the caller's): its own log through
the root logger, whose ``StreamHandler(sys.stdout)`` it makes per task, and every line of the
task's subprocess (executor input and output JSON, the step's log, progress bars) through
``print``, which looks ``sys.stdout`` up on each call. :class:`TaskConsole` therefore swaps
``sys.stdout`` and ``sys.stderr`` for a router that writes each thread's text to the log file of
the task that thread is running, and wraps ``kfp.local.orchestrator.task_executor.
execute_single_task`` (the one call both of kfp.local's orchestrators make per task) to learn
which task that is and how it ended. The console then gets:

* one line per task when it ends: start and end time, seconds, ``done`` or ``FAILED``, the
  outcome of ptdistill's own caches where the step reports one (the ``cache`` metadata of its
  output artifacts: ``hit``, ``miss``; kfp.local's task cache is not enabled by ``run_local``)
  or the student it trained, and the task's log file;
* the progress bars of long steps (the tqdm lines the steps print), at most one line per task
  every :data:`PROGRESS_SECONDS`;
* for a failed task, the last :data:`TAIL_LINES` lines of its log, and the failure raised from
  the pipeline names the log file.

With ``verbose=True`` the full stream still reaches the console as before, and the files are
written all the same. One console at a time per process: it patches module state of kfp.local.
"""

from __future__ import annotations

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it

import functools
import inspect
import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from kfp.local.orchestrator import task_executor

#: Least seconds between two progress lines of one task on the console.
PROGRESS_SECONDS = 30.0
#: Lines of a failed task's log repeated on the console.
TAIL_LINES = 20
#: What kfp.local writes outside any task (pipeline start and end): a file beside the tasks' logs.
PIPELINE_LOG = "pipeline.log"

# A tqdm bar with a total, as tqdm draws it by default:
# "desc: 40%|####      | 8/20 [00:12<00:18,  1.50epoch/s, loss=0.41, val_acc=0.82]".
_BAR = re.compile(r"(?:(?P<desc>[^|\[\]]*?): *)?(?P<percent>\d+)%\|[^|]*\| *(?P<n>[\d.]+\w?)/(?P<total>[\d.]+\w?)"
                  r" \[[^<\]]*<(?P<remaining>[^,\]]*)(?:,[^,\]]*(?:, (?P<postfix>[^\]]*))?)?\]")
_ITERATION = re.compile(r"-iteration-(\d+)")


def progress_text(line: str) -> str | None:
    """A tqdm bar line as one short phrase (``"teacher 3/8, loss=0.41, 00:05 left"``), else ``None``
    (also for a bar at 0, which says nothing yet)."""
    match = _BAR.search(line)
    if match is None or match["n"] == "0":  # a bar just drawn says nothing yet
        return None
    parts = [" ".join(filter(None, [(match["desc"] or "").strip(), f"{match['n']}/{match['total']}"]))]
    if match["postfix"]:
        parts.append(match["postfix"].strip())
    if match["remaining"] not in ("?", "00:00"):
        parts.append(f"{match['remaining']} left")
    return ", ".join(parts)


def cache_text(outputs: dict[str, Any]) -> str:
    """The outcome of ptdistill's caches from a task's outputs: ``"cache hit"``, ``"cache miss"``,
    ``"cache distill_probs hit, test_probs miss"`` when they differ, ``""`` when the task reports none.

    The steps record it as the ``cache`` metadata (``hit``, ``miss``, ``off``) of their output
    artifacts; ``off`` (caching disabled) is left out.
    """
    found = {name: value.metadata["cache"] for name, value in outputs.items()
             if isinstance(getattr(value, "metadata", None), dict) and value.metadata.get("cache") in ("hit", "miss")}
    if not found:
        return ""
    if len(set(found.values())) == 1:
        return f"cache {next(iter(found.values()))}"
    return "cache " + ", ".join(f"{name} {value}" for name, value in found.items())


def student_text(outputs: dict[str, Any]) -> str:
    """``"ptloss seed 0"`` when a task's output is a student (metadata ``method`` and ``seed``), else ``""``:
    fan-out tasks are otherwise told apart only by their iteration number."""
    for value in outputs.values():
        metadata = getattr(value, "metadata", None)
        if isinstance(metadata, dict) and "method" in metadata and "seed" in metadata:
            seed = metadata["seed"]  # kfp hands metadata numbers back as floats
            return f"{metadata['method']} seed {int(seed) if float(seed).is_integer() else seed}"
    return ""


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it (what a user can paste), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass
class _Task:
    """A running task: its name, log file and what the progress throttle needs."""

    name: str
    log: Path
    file: TextIO
    started: float = field(default_factory=time.time)
    last_progress: float = field(default_factory=time.monotonic)
    partial: str = ""


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr``: hands each write to the console."""

    def __init__(self, console: TaskConsole, stream: TextIO) -> None:
        self._console, self._stream = console, stream

    def write(self, text: str) -> int:
        self._console.write(text, self._stream)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


class TaskConsole:
    """Routes kfp.local's output into per-task log files under ``log_dir`` (see the module docstring).

    ``out`` is where the task lines go (default: ``sys.stdout`` when entered); ``clock`` (seconds,
    monotonic) paces the progress lines.
    """

    def __init__(self, log_dir: str | Path, verbose: bool = False, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log_dir = Path(log_dir)
        self.verbose = verbose
        self.failed: list[Path] = []
        self._out = out
        self._clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pipeline_log: TextIO | None = None
        self._saved: tuple[TextIO, TextIO, Callable] | None = None
        self._root_logging: tuple[int, list[logging.Handler]] | None = None
        self._closed = False
        #: kfp.local's output folder of this run (``<pipeline_root>/<pipeline>-<time>``), once a task started.
        self.outputs_dir: Path | None = None

    # ------------------------------------------------------------------ entering and leaving

    def __enter__(self) -> TaskConsole:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._pipeline_log = self._open(self.log_dir / PIPELINE_LOG, "pipeline")
        self._saved = (sys.stdout, sys.stderr, task_executor.execute_single_task)
        root = logging.getLogger()
        self._root_logging = (root.level, root.handlers[:])
        self._out = self._out or sys.stdout
        sys.stdout, sys.stderr = _Router(self, sys.stdout), _Router(self, sys.stderr)
        task_executor.execute_single_task = self._wrap(task_executor.execute_single_task)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        assert self._saved is not None and self._pipeline_log is not None
        sys.stdout, sys.stderr, task_executor.execute_single_task = self._saved
        self._restore_root_logger()
        self._closed = True
        self._pipeline_log.close()
        if isinstance(error, RuntimeError) and self.failed:
            logs = ", ".join(shown_path(path) for path in self.failed)
            raise RuntimeError(f"{error} Log: {logs}") from error

    def _restore_root_logger(self) -> None:
        """Put the root logger's level and handlers back as they were when the console was entered.

        kfp.local swaps the root logger's handlers around each task (``local_logger_context``) and
        restores what it saw on entry; two tasks that overlap restore each other's handler, so one
        ``StreamHandler`` on this console's stdout stand-in, at level INFO, outlived the run and
        wrote every later INFO record of the process into a closed log.
        """
        assert self._root_logging is not None
        root = logging.getLogger()
        root.setLevel(self._root_logging[0])
        root.handlers[:] = self._root_logging[1]

    # ------------------------------------------------------------------ tasks

    def _wrap(self, execute: Callable) -> Callable:
        signature = inspect.signature(execute)

        @functools.wraps(execute)
        def execute_single_task(*args, **kwargs):
            bound = signature.bind(*args, **kwargs).arguments
            if bound.get("pipeline_root"):  # kfp.local always passes it
                self.outputs_dir = Path(bound["pipeline_root"]) / bound["pipeline_resource_name"].split("/")[0]
            name = bound["task_name"] + "".join(f"-{i}" for i in _ITERATION.findall(bound["pipeline_resource_name"]))
            path = self.log_dir / f"{name}.log"
            task = _Task(name, path, self._open(path, name), last_progress=self._clock())
            self._local.task = task
            outputs, status = {}, None
            try:
                outputs, status = execute(*args, **kwargs)
                return outputs, status
            finally:
                self._local.task = None
                task.file.close()
                self._finished(task, outputs or {}, getattr(status, "name", "FAILURE"))

        return execute_single_task

    def _open(self, path: Path, name: str) -> TextIO:
        # Appended: a re-run under the same run name (a resume) keeps the earlier attempt's log.
        file = open(path, "a", encoding="utf-8", errors="replace", buffering=1)
        file.write(f"==== {name}: started {datetime.now().isoformat(timespec='seconds')}\n")
        return file

    def _finished(self, task: _Task, outputs: dict[str, Any], status: str) -> None:
        if self._closed:  # a task the runner ended after a signal: the run's one line says what happened
            return
        ok = status == "SUCCESS"
        if not ok:
            with self._lock:
                self.failed.append(task.log)
        if self.verbose:
            return
        end = time.time()
        when = f"{datetime.fromtimestamp(task.started):%H:%M:%S}-{datetime.fromtimestamp(end):%H:%M:%S}"
        line = (f"{when}  {task.name:<28} {'done' if ok else 'FAILED':<6} {end - task.started:5.0f} s  "
                f"{cache_text(outputs) or student_text(outputs):<14} log: {shown_path(task.log)}")
        if not ok:
            line += "\n" + "\n".join(f"    | {text}" for text in _tail(task.log, TAIL_LINES))
        self._say(line)

    # ------------------------------------------------------------------ text

    def write(self, text: str, stream: TextIO) -> None:
        """A write to ``sys.stdout``/``sys.stderr`` (``stream``) from the current thread."""
        task: _Task | None = getattr(self._local, "task", None)
        if task is None:
            with self._lock:
                assert self._pipeline_log is not None
                self._pipeline_log.write(text)
        else:
            task.file.write(text)
        if self.verbose:
            with self._lock:
                stream.write(text)
        elif task is not None:
            self._scan(task, text)

    def _scan(self, task: _Task, text: str) -> None:
        """Put a progress line on the console when one is due."""
        *lines, task.partial = (task.partial + text).split("\n")
        for line in lines:
            progress = progress_text(line)
            if progress is not None and self._clock() - task.last_progress >= PROGRESS_SECONDS:
                task.last_progress = self._clock()
                self._say(f"{datetime.now():%H:%M:%S}           {task.name:<28} {progress}")

    def _say(self, line: str) -> None:
        assert self._out is not None
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def _tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` non-blank lines of a log, rules (``-----``) left out."""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line for line in text if line.strip() and set(line.strip()) != {"-"}][-lines:]

