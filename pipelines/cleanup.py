"""What a failed or interrupted local run leaves behind, and removing it: best effort, per backend, in bounded time.

Two backends hold a run's traces: MLflow (the RUNNING parent, and any child a crashed step left
RUNNING) and the artifact store (the objects under ``<benchmark>/<run name>/``). Either may be
down when a run fails (often it is why the run failed), and their clients retry for minutes. So
each is cleaned in its own thread, both at once, within one deadline; one failing or hanging
never stops the other, and the caller gets back one line saying what was done and, for what was
not, the command that finishes it by hand. The run's resume checkpoints are kept, so a re-run
with the same run name continues where this one stopped; the teacher cache (outside the run's
prefix) is never touched.
"""

from __future__ import annotations

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it

import json
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ptdistill.steps.common import CHECKPOINTS
from ptdistill.storage import SHORT_RETRY, open_store
from ptdistill.tracking import Tracker, bounded_http

#: Seconds the clean-up of both backends may take in all.
CLEAN_UP_SECONDS = 30.0


def delete_run_objects(artifact_store: str, benchmark: str, run_name: str) -> tuple[int, int]:
    """Delete the run's objects except its resume checkpoints, with the store's short retry
    budget; returns (deleted, checkpoints kept). Raises ``OSError`` naming what is left."""
    prefix = f"{benchmark}/{run_name}"
    result = open_store(artifact_store, retry=SHORT_RETRY).delete_prefix(
        prefix, keep=lambda key: key.startswith(f"{prefix}/{CHECKPOINTS}/"))
    if not result.ok:
        left = f"{_count(len(result.failed), 'object')} left: " if result.failed else ""
        raise OSError(f"{left}{result.error}")
    return len(result.deleted), len(result.kept)


def fail_parents(tracking_uri: str, benchmark: str, run_name: str, reason: str) -> int:
    """Mark the run's RUNNING MLflow parents (and their RUNNING children) FAILED, with MLflow's
    short HTTP retry budget (:func:`ptdistill.tracking.bounded_http`); returns how many."""
    with bounded_http():
        return len(Tracker(tracking_uri).fail_runs(benchmark, run_name, reason))


def _by_deadline(jobs: dict[str, Callable[[], object]], seconds: float) -> dict[str, object]:
    """Run each job in a daemon thread, all at once; by name, its result, the exception it
    raised, or a TimeoutError if it was still running ``seconds`` after the start (it is left to
    finish or die with the process)."""
    results: dict[str, object] = {}

    def call(name: str, job: Callable[[], object]) -> None:
        try:
            results[name] = job()
        except Exception as err:  # noqa: BLE001 - reported to the user, not raised
            results[name] = err

    threads = {name: threading.Thread(target=call, args=(name, job), name=f"ptdistill-clean-{name}", daemon=True)
               for name, job in jobs.items()}
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + seconds
    out: dict[str, object] = {}
    for name, thread in threads.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        out[name] = TimeoutError(f"no answer within {seconds:g} s") if thread.is_alive() else results[name]
    return out


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _by_hand(function: str, *args: str) -> str:
    """A shell command that calls ``function`` of this module with ``args``, with this Python.
    The arguments are JSON strings (also Python literals): double quotes read well inside the
    shell's single quotes."""
    code = f"from pipelines.cleanup import {function}; {function}({', '.join(map(json.dumps, args))})"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def clean_up(benchmark: str, run_name: str, tracking_uri: str, artifact_store: str, reason: str,
             seconds: float = CLEAN_UP_SECONDS, local_outputs: Path | None = None) -> str:
    """Mark the run's MLflow parent FAILED and delete its objects except checkpoints, at most
    ``seconds`` in all; never raises. Returns one line, starting ``clean-up:``, saying what was
    done and, for a backend that failed or did not answer in time, what is left and the command
    that finishes it by hand (it repeats what this function tried). ``local_outputs``, kfp.local's
    scratch folder of the run (its copies of splits, teacher and students), is removed too; the
    task logs beside it are kept."""
    if local_outputs is not None:
        shutil.rmtree(local_outputs, ignore_errors=True)
    results = _by_deadline({
        "tracking": lambda: fail_parents(tracking_uri, benchmark, run_name, reason),
        "store": lambda: delete_run_objects(artifact_store, benchmark, run_name),
    }, seconds)
    parts = []
    tracked = results["tracking"]
    if isinstance(tracked, BaseException):
        parts.append(f"could not mark the MLflow parent of run {run_name!r} FAILED ({tracking_uri}: {_why(tracked)});"
                     f" when it answers, run `{_by_hand('fail_parents', tracking_uri, benchmark, run_name, 'failed (by hand)')}`")
    else:
        parts.append("MLflow parent marked FAILED" if tracked else "no RUNNING MLflow parent to mark FAILED")
    stored = results["store"]
    where = f"{artifact_store.rstrip('/')}/{benchmark}/{run_name}/"
    if isinstance(stored, BaseException):
        parts.append(f"could not delete the run's objects under {where} ({_why(stored)}); when it answers, run "
                     f"`{_by_hand('delete_run_objects', artifact_store, benchmark, run_name)}`")
    else:
        deleted, kept = stored
        parts.append(f"{_count(deleted, 'run object')} deleted from {where}")
        if kept:
            parts.append(f"{_count(kept, 'checkpoint object')} kept: a re-run with `--run-name {shlex.quote(run_name)}` resumes")
    return "clean-up: " + "; ".join(parts)
