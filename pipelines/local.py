"""Run a benchmark's pipeline on the embedded default: kfp.local, a local artifact folder, MLflow on SQLite.

Two runners: ``subprocess`` (each task a process on this environment's ptdistill) and ``docker``
(each task a container of the image the compiled pipeline names, as on a cluster; see
:mod:`pipelines.containers`).
"""

from __future__ import annotations

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it

import builtins
import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

from filelock import FileLock, Timeout
from kfp import local

from pipelines import containers
from pipelines.cleanup import clean_up
from pipelines.console import TaskConsole
from pipelines.dag import build_pipeline
from pipelines.signals import StopOnSignals
from ptdistill import defaults
from ptdistill.config import to_dict
from ptdistill.experiments import ExperimentConfig
from ptdistill.preflight import preflight
from ptdistill.steps.common import SOLO_THREADS, check_run_name, new_run_name
from ptdistill.storage import open_store
from ptdistill.tracking import RUNNER_PID_ENV, RunNameInUseError, Tracker


@dataclass
class RunResult:
    """Where a finished local run left its results."""

    run_name: str
    seconds: float
    students: list[dict]
    markdown: str
    #: Where the report's Markdown is (its HTML page and students.json are beside it).
    report_uri: str


#: The ways ``run_local`` runs tasks; the first is the default.
RUNNERS = ("subprocess", "docker")


def default_tracking_uri(runner: str = "subprocess", pipeline_root: str | Path = defaults.PIPELINE_ROOT) -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite file: ``mlflow.db`` in the working directory, or for
    the docker runner in the pipeline root (the only folder its task containers see)."""
    folder = Path(pipeline_root) if runner == "docker" else Path()
    return os.environ.get(defaults.TRACKING_URI_ENV) or f"sqlite:///{(folder / defaults.TRACKING_DB).resolve()}"


def run_local(
    config: ExperimentConfig,
    pipeline_root: str | Path = defaults.PIPELINE_ROOT,
    artifact_store: str | None = None,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    verbose: bool = False,
    runner: str = "subprocess",
) -> RunResult:
    """Run the pipeline through ``kfp.local``: ``runner`` ``subprocess`` (``SubprocessRunner(use_venv=False)``)
    or ``docker`` (``DockerRunner``: each task in its image, after :func:`pipelines.containers.docker_preflight`;
    a signal stops the run's containers too).

    On failure, and on SIGINT, SIGTERM or SIGHUP (:class:`pipelines.signals.RunInterrupted`, after every
    task process is ended), the MLflow parent run is marked FAILED and the run's objects except
    its resume checkpoints are removed from the artifact store (the teacher cache keeps only
    complete entries), best effort and in bounded time (:func:`pipelines.cleanup.clean_up`), then
    the error is raised with a note, starting ``clean-up:``, on what was done and what is left.
    Each task's log goes to ``<pipeline_root>/logs/<run_name>/<task>.log`` and the console gets a
    line per task (:class:`pipelines.console.TaskConsole`); ``verbose`` streams kfp.local's full log too.
    """
    pipeline_root = Path(pipeline_root).resolve()
    artifact_store = artifact_store or str(pipeline_root)
    tracking_uri = tracking_uri or default_tracking_uri(runner, pipeline_root)
    run_name = check_run_name(run_name) if run_name is not None else new_run_name(config.benchmark)
    if runner not in RUNNERS:
        raise ValueError(f"runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    plan = None
    if runner == "docker":
        plan = containers.docker_preflight(build_pipeline(config), pipeline_root, artifact_store, tracking_uri,
                                           to_dict(config))
    preflight(artifact_store, tracking_uri)
    with _hold_run_name(pipeline_root, config.benchmark, run_name):
        # A RUNNING parent of this name whose runner is gone is marked FAILED; one whose runner
        # lives is refused (RunNameInUseError) before anything is written. Outside the clean-up of
        # _run_pipeline, so a refused run never cleans up the objects of the run that holds the name.
        Tracker(tracking_uri).supersede_stale_runs(config.benchmark, run_name)
        if plan is not None:  # now that the tracking file exists: the task containers' user may write it all
            containers.claim_pipeline_root(pipeline_root, plan.uid, plan.gid)
        return _run_pipeline(config, pipeline_root, artifact_store, tracking_uri, run_name, verbose, plan)


@contextlib.contextmanager
def _hold_run_name(pipeline_root: Path, benchmark: str, run_name: str) -> Iterator[None]:
    """Hold ``<pipeline_root>/locks/<benchmark>--<run_name>.lock`` for the whole run, or raise
    RunNameInUseError at once if another run of that name holds it.

    The MLflow check (supersede_stale_runs) only sees a run once its parent exists, seconds after
    it starts: two runs of one name started together both passed it, shared a store prefix and a
    log folder, and a Ctrl-C on one failed the other's parent. The lock closes that gap for runs
    sharing a pipeline root (the same working directory, by default).
    """
    path = pipeline_root / "locks" / f"{benchmark}--{run_name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunNameInUseError(f"run {run_name!r} of {benchmark} is already running from this pipeline root "
                                f"(it holds {path}): choose another --run-name, or wait for it to end") from None
    try:
        yield
    finally:
        lock.release()


def _run_pipeline(config: ExperimentConfig, pipeline_root: Path, artifact_store: str, tracking_uri: str,
                  run_name: str, verbose: bool, plan: containers.DockerPlan | None) -> RunResult:
    """The run itself, once its inputs, stores and name are checked (see run_local); ``plan``: the docker
    runner's, None for the subprocess runner."""
    # Two students train at once locally (kfp.local runs ParallelFor two at a time): one thread each.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # ...while the teacher steps, which run alone, may use every core (see steps.common.solo_threads).
    os.environ.setdefault(SOLO_THREADS, str(len(os.sched_getaffinity(0))))
    # Progress bars go to task logs, not a terminal: a line every 10 s, not every 0.1 s.
    os.environ.setdefault("TQDM_MININTERVAL", "10")
    if plan is None:
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
                   raise_on_error=True)
        # The subprocess runner runs the components on this environment's ptdistill by design, not in their images.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom",
                                category=RuntimeWarning)
    t0 = time.perf_counter()
    # kfp.local indents task logs by swapping builtins.print per task; with two ParallelFor tasks in
    # threads the swaps interleave and an indented print can outlive the run: put ours back after.
    original_print = builtins.print
    console = TaskConsole(pipeline_root / "logs" / run_name, verbose=verbose)
    with _task_environment(), StopOnSignals(also_end=_ender(plan, run_name)) as signals:
        if plan is not None:  # the task environment is set: the containers get it
            local.init(runner=containers.docker_runner(plan, run_name, os.environ), pipeline_root=str(pipeline_root),
                       raise_on_error=True)
        try:
            with console:
                build_pipeline(config)(config_json=json.dumps(to_dict(config)), runs=config.runs(),
                                       run_name=run_name, tracking_uri=tracking_uri, artifact_store=artifact_store)
        except BaseException as err:
            signals.quiet()
            if plan is not None:  # a failed task's siblings still run in their containers
                containers.end_containers(run_name)
            err.add_note(clean_up(config.benchmark, run_name, tracking_uri, artifact_store,
                                  f"{type(err).__name__}: {err}", local_outputs=console.outputs_dir))
            raise
        finally:
            builtins.print = original_print
    store = open_store(artifact_store)
    prefix = f"{config.benchmark}/{run_name}/report"
    return RunResult(
        run_name=run_name,
        seconds=time.perf_counter() - t0,
        students=json.loads(store.read_text(f"{prefix}/students.json")),
        markdown=store.read_text(f"{prefix}/report.md"),
        report_uri=store.uri(f"{prefix}/report.md"),
    )


def _ender(plan: containers.DockerPlan | None, run_name: str):
    """What a signal must end besides this process's children: the run's task containers, if any."""
    return None if plan is None else (lambda: containers.end_containers(run_name))


@contextlib.contextmanager
def _task_environment() -> Iterator[None]:
    """Environment of the task processes while the run lasts (restored after).

    ``PYTHONSAFEPATH``: kfp.local starts tasks as ``python -m kfp.dsl.executor_main`` in the user's
    working directory, which ``-m`` puts first on ``sys.path``, so a stray ``inspect.py`` or
    ``random.py`` there was imported instead of the standard module, and ran as a script on the
    executor's arguments (one such script left an empty file named ``--component_module_path``).
    The executor loads the component by file path and ptdistill is installed, so tasks need no
    working-directory imports. ``RUNNER_PID_ENV``: whose tasks these are (the parent run's host/pid tags).
    """
    # patch.dict restores os.environ as it was (keys added are removed) when the run ends.
    with patch.dict(os.environ, {"PYTHONSAFEPATH": "1", RUNNER_PID_ENV: str(os.getpid())}):
        yield
