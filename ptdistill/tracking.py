"""MLflow bookkeeping for the distillation pipeline: one parent run per pipeline run, one
finished child run per student, and a ``champion`` alias on the registered model.

Each pipeline step is a separate process that only receives the tracking URI and run ids as
strings, so everything here goes through an explicit :class:`mlflow.MlflowClient` and never
through MLflow's process-global state (``mlflow.set_tracking_uri``, ``mlflow.start_run``):
several :class:`Tracker` objects on different stores can coexist, and a step cannot log into
whatever run or store another piece of code left active.

Naming conventions the rest of the pipeline relies on:

* experiment ``ptdistill-<benchmark>``; registered model of the same name;
* runs carry the tag ``ptdistill.role`` = ``parent`` | ``student``; children also carry
  ``mlflow.parentRunId`` (what the MLflow UI nests on);
* student metrics: ``test_*`` (``test_accuracy``, ``test_nll``, ``test_ece`` and the task
  metric, e.g. ``test_f1``) and ``val_*`` for validation; training curves are metric histories
  with steps (``train_loss``; ``epoch_val_*`` with step = epoch);
* the teacher's record is on the parent: ``teacher_<split>_*`` scores, and for a teacher trained
  in the run its checkpoint selection (``teacher_select``, ``teacher_selected_epoch``, the
  ``teacher_epoch_val_*`` curves; :func:`ptdistill.steps.teacher.log_teacher_training`);
* a parent started by the local runner carries HOST_TAG and PID_TAG (the runner's process,
  from ``$PTDISTILL_RUNNER_PID``), so a later run of the same name can tell a stale RUNNING
  parent from a live one (:meth:`Tracker.supersede_stale_runs`);
* a student's model files are the run artifact directory ``model``;
* structured params (lists, arrays, tensors, dicts, e.g. a C x M ``eps``) are logged as a compact
  JSON param, cut to MLflow's length limit, and in full as the artifact ``params/<key>.json``;
* every text written to MLflow (tags, params, run names) goes through :func:`clean_text`: no
  terminal colour codes or control characters from a captured log end up in the UI;
* filter strings never contain a user's string: MLflow's filter grammar has no escapes (it only
  trims the quotes), so run names are compared in Python (:func:`_literal`).

A sqlite store is opened under an inter-process lock (``<db>.lock`` beside the file), and a fresh
file's schema is built aside and renamed into place, so parallel steps of two runs started at
once never race in MLflow's schema migration, and a half-migrated file is refused by name.
"""

from __future__ import annotations

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it

import contextlib
import json
import logging
import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from unittest.mock import patch

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

from ptdistill import defaults
from ptdistill.io import write_json_atomic

PathLike = str | os.PathLike[str]

ROLE_TAG = "ptdistill.role"
FAILURE_TAG = "ptdistill.failure_reason"
PARENT_TAG = "mlflow.parentRunId"
#: The pipeline run name on a parent (set by prepare_data); what fail_runs and supersede_stale_runs match.
RUN_NAME_TAG = "kfp.run_name"
#: Host and pid of the local runner process that started a parent (absent for remote runs).
HOST_TAG = "ptdistill.host"
PID_TAG = "ptdistill.pid"
#: The local runner sets this to its own pid; start_parent, running in a task subprocess, records it.
RUNNER_PID_ENV = "PTDISTILL_RUNNER_PID"
CHAMPION_ALIAS = "champion"
#: On a parent: the method its report recommends, chosen on validation (ptdistill.steps.report.recommend).
RECOMMENDED_TAG = "ptdistill.recommended"
#: Parent-run tag: the recipe the run trained with (``ExperimentConfig.recipe``: paper or best).
RECIPE_TAG = "ptdistill.recipe"
SCORE_TAG = "validation_score"
MODEL_ARTIFACT = "model"
#: Metrics every student reports first, in this order; other test_* / val_* metrics follow.
TEST_METRICS = ("test_accuracy", "test_nll", "test_ece")
TRUNCATED = "...[truncated]"
#: Where ``mlflow ui`` / ``mlflow server`` listen by default: the UI for a sqlite/file store.
DEFAULT_UI_URL = defaults.UI_URL


def experiment_name(benchmark: str) -> str:
    """The experiment (and registered model) name for a benchmark: one place to compare it."""
    if not benchmark:
        raise ValueError("benchmark must be a non-empty string")
    return f"ptdistill-{benchmark}"


def git_commit() -> str | None:
    """Commit of this package's checkout, else ``$PTDISTILL_GIT_COMMIT`` (set when an image is
    built, where there is no .git), else None.

    git runs in the package's own directory, not the working directory, so a step started from
    some other repository does not record that repository's commit.
    """
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("PTDISTILL_GIT_COMMIT") or None
    return out.stdout.strip() or None


def runs_url(tracking_uri_or_ui_url: str, experiment_id: str) -> str:
    """Link to an experiment's runs table. An http(s) tracking URI is also the UI; any other
    store (sqlite, file) is browsed with ``mlflow ui``, which listens on DEFAULT_UI_URL."""
    base = tracking_uri_or_ui_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        base = DEFAULT_UI_URL
    return f"{base}/#/experiments/{experiment_id}/runs"


def _compact(value: object) -> object:
    """Floats to 6 significant digits, so a float32 matrix reads as 0.1, not 0.10000000149;
    strings through clean_text (JSON would keep an escape code as ``\\u001b``)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, (list, tuple)):
        return [_compact(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: _compact(v) for k, v in value.items()}
    return value


def _format_params(params: Mapping[str, object]) -> tuple[list[Param], dict[str, object]]:
    """MLflow params (strings of at most MAX_PARAM_VAL_LENGTH characters) and, by key, the full
    structured values that also go to ``params/<key>.json``.

    Tensors and arrays become nested lists (``tolist``). A value that does not fit is cut and
    ends with TRUNCATED, so the UI never shows a silently shortened matrix as if it were whole.
    """
    out: list[Param] = []
    structured: dict[str, object] = {}
    for key, value in params.items():
        plain = value.tolist() if callable(getattr(value, "tolist", None)) else value
        if plain is None or isinstance(plain, (str, bool, int, float)):
            text = clean_text(plain)
        else:
            structured[key] = plain
            text = json.dumps(_compact(plain), separators=(",", ":"), default=str)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            text = text[: MAX_PARAM_VAL_LENGTH - len(TRUNCATED)] + TRUNCATED
        out.append(Param(key, text))
    return out, structured


def _metrics(values: Mapping[str, float], timestamp: int | None = None,
             curves: Mapping[str, Iterable[tuple[int, float]]] | None = None) -> list[Metric]:
    """Final values, at step 0, and each curve's ``(step, value)`` points as a metric history."""
    timestamp = get_current_time_millis() if timestamp is None else timestamp
    return [Metric(key, float(v), timestamp, 0) for key, v in values.items()] + [
        Metric(key, float(value), timestamp, int(step)) for key, points in (curves or {}).items()
        for step, value in points
    ]


def _score(version: ModelVersion) -> float | None:
    """A model version's validation score tag, or None if missing or unreadable."""
    try:
        score = float(version.tags[SCORE_TAG])
    except (KeyError, ValueError):
        return None
    return score if math.isfinite(score) else None


def _stage(files: Mapping[str, PathLike] | Iterable[PathLike], root: Path) -> None:
    """Copy files (or directories) into ``root`` under their artifact paths.

    A mapping gives artifact path -> local path (so files can be renamed); a plain list keeps
    base names. Staging first means one upload call, and a missing input fails before any run
    is created.
    """
    items = files.items() if isinstance(files, Mapping) else ((Path(p).name, p) for p in files)
    for dest, src in items:
        rel = PurePosixPath(dest)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"artifact path {dest!r} must be relative and stay inside the run")
        src, target = Path(src), root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, target)
        else:
            raise FileNotFoundError(f"artifact {dest!r}: no such file or directory: {src}")


def _stage_structured(structured: Mapping[str, object], root: Path) -> None:
    for key, value in structured.items():
        write_json_atomic(root / "params" / f"{key}.json", {"key": key, "value": value})


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (query string dropped; relative to the working
    directory, as SQLAlchemy reads it), or None for another store or an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    db = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(db) if db and db != ":memory:" else None


def _sqlite_artifact_root(tracking_uri: str) -> str | None:
    """``<db dir>/mlartifacts`` for a file-backed sqlite URI, else None (the server decides).

    MLflow's own default is ``./mlruns`` relative to the working directory of whichever process
    creates the experiment, which differs between pipeline steps.
    """
    db = _sqlite_file(tracking_uri)
    return None if db is None else str(db.resolve().parent / "mlartifacts")


#: Seconds a SQLite connection waits for another process's lock. sqlite3's default of 5 s is too
#: short when two parallel pipeline steps open the store on a loaded 2-core machine (MLflow's
#: store start-up runs outside its own 20 s busy_timeout): "database is locked" was seen in CI.
SQLITE_TIMEOUT = 60


def _with_sqlite_timeout(uri: str) -> str:
    """``uri`` with ``timeout=SQLITE_TIMEOUT`` for a sqlite store that does not set its own."""
    if not uri.startswith("sqlite:") or "timeout=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}timeout={SQLITE_TIMEOUT}"


# -- text, filters ----------------------------------------------------------------------------

#: ANSI (ECMA-48) escape sequences: CSI (colours, cursor moves), OSC (titles, links), and the
#: other escapes (ESC, intermediate bytes, a final byte: charset switches such as ESC ( B).
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]*[0-~])")
#: The same CSI spelled out by repr() or JSON (``\\x1b[91m``, ``\\033[0m``, ``\\u001b[0m``), as in
#: ``repr(err)`` of kfp's "Task ... finished with status FAILURE" error.
_ESCAPED_ANSI = re.compile(r"\\(?:x1[bB]|033|u001[bB])\[[0-?]*[ -/]*[@-~]")
#: C0/C1 control characters except tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(value: object) -> str:
    """``str(value)`` without terminal escape sequences (raw or spelled out by repr) or control
    characters (tab and newline kept): what kfp's coloured log lines and errors become before
    they are written to MLflow."""
    return _CONTROL.sub("", _ANSI.sub("", _ESCAPED_ANSI.sub("", str(value))))


def _clean_tags(tags: Mapping[str, object]) -> dict[str, str]:
    """Tag values as MLflow stores them: cleaned (clean_text) and cut to MAX_TAG_VAL_LENGTH."""
    return {key: clean_text(value)[:MAX_TAG_VAL_LENGTH] for key, value in tags.items()}


def _literal(value: str) -> str:
    """``value`` quoted for an MLflow filter string, for constants and run ids only.

    MLflow's filter parser trims the quotes of a string value and unescapes nothing, so there is
    no safe way to quote a string holding a quote: anything beyond word characters, ``.`` and
    ``-`` is refused, and user strings (run names) are compared in Python instead.
    """
    if not re.fullmatch(r"[\w.\-]+", value, flags=re.ASCII):
        raise ValueError(f"{value!r} cannot be put in an MLflow filter string; compare it in Python")
    return f"'{value}'"


# -- opening a store -----------------------------------------------------------------------------


class TrackingStoreError(ValueError):
    """The tracking store given cannot be used: a half-migrated or unreadable sqlite file, a
    folder that is not writable, a tracking server that does not answer. The message names the
    file or URI and what to do (a ValueError: the CLI prints it as one line, exit 2)."""


class RunNameInUseError(ValueError):
    """A RUNNING parent of the same run name belongs to a live (or unknown) process: the run
    name given cannot be used now (a ValueError: the CLI prints it as one line, exit 2)."""


#: Seconds a process waits for another one holding the store lock (which only creates or
#: upgrades a schema: seconds) before giving up with TrackingStoreError.
STORE_LOCK_TIMEOUT = 300


def _move_away_hint(db: Path) -> str:
    return (f"move it away (mv '{db}' '{db}.broken') to start a fresh store, or restore a backup if it holds runs "
            "you need")


def _check_sqlite_schema(db: Path) -> None:
    """Raise TrackingStoreError if ``db`` is not an SQLite file or holds the leftover
    ``_alembic_tmp_*`` tables of an interrupted MLflow schema migration (every run on it fails)."""
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=SQLITE_TIMEOUT)) as conn:
            names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.DatabaseError as err:
        raise TrackingStoreError(f"tracking database {db} cannot be read ({err}): {_move_away_hint(db)}") from None
    leftovers = sorted(name for name in names if name.startswith("_alembic_tmp_"))
    if leftovers:
        raise TrackingStoreError(
            f"tracking database {db} is half-migrated (leftover tables {', '.join(leftovers)} of an interrupted "
            f"MLflow schema migration): every run on it would fail; {_move_away_hint(db)}"
        )


def _build_schema(db: Path) -> None:
    """Create MLflow's schema in a file beside ``db`` and rename it to ``db``: a process killed
    while migrating (seconds) leaves a stray temporary file, never a half-migrated ``db``.
    Call with the store lock held (temporary files of dead holders are removed here)."""
    for stray in db.parent.glob(f".{db.name}.*.creating"):
        stray.unlink(missing_ok=True)
    tmp = db.parent / f".{db.name}.{os.getpid()}.creating"
    # MLflow logs "Creating initial MLflow database tables..." at INFO: noise on a run's console.
    migration_log = logging.getLogger("mlflow.store.db.utils")
    level = migration_log.level
    migration_log.setLevel(logging.WARNING)
    try:
        MlflowClient(_with_sqlite_timeout(f"sqlite:///{tmp.resolve()}"))
        os.replace(tmp, db)
    finally:
        migration_log.setLevel(level)
        tmp.unlink(missing_ok=True)


def _open_client(tracking_uri: str, registry_uri: str | None = None) -> MlflowClient:
    """An MlflowClient on ``tracking_uri``; for a sqlite file, opened under ``<db>.lock``.

    MLflow creates or upgrades a sqlite schema when a process first opens the store, with no
    inter-process lock: two processes doing it at once leave a half-migrated file. Under the lock
    a missing or empty file gets its schema built aside (_build_schema), an existing one is
    checked (_check_sqlite_schema) and then opened, so an older schema is upgraded by one process
    at a time. Raises TrackingStoreError naming the file when it cannot be opened.
    """
    store_uri = _with_sqlite_timeout(tracking_uri)
    registry = _with_sqlite_timeout(registry_uri or tracking_uri)
    db = _sqlite_file(tracking_uri)
    if db is None:
        return MlflowClient(store_uri, registry_uri=registry)
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(f"{db}.lock", timeout=STORE_LOCK_TIMEOUT):
            if not db.exists() or db.stat().st_size == 0:
                _build_schema(db)
            _check_sqlite_schema(db)
            try:
                return MlflowClient(store_uri, registry_uri=registry)
            except Exception as err:  # MlflowException, SQLAlchemy's and alembic's errors alike
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise TrackingStoreError(
                    f"MLflow cannot open the tracking database {db} ({reason}): {_move_away_hint(db)}; a database "
                    f"from an older MLflow is upgraded with `mlflow db upgrade sqlite:///{db.resolve()}` after a backup"
                ) from err
    except Timeout:
        raise TrackingStoreError(
            f"tracking database {db}: another process has held {db}.lock for over {STORE_LOCK_TIMEOUT} s "
            "(it only creates or upgrades the schema, which takes seconds): is one hung?"
        ) from None


@contextlib.contextmanager
def bounded_http(max_retries: int = 1, timeout_s: int = 10) -> Iterator[None]:
    """Within the block, MLflow's HTTP requests are tried at most ``1 + max_retries`` times each,
    without back-off, and each waits at most ``timeout_s`` seconds for the server.

    MLflow's defaults (7 retries, exponential back-off, 120 s timeout) make a call against a
    tracking server that is down take minutes: right for a training step, wrong for a clean-up
    or a pre-flight check. MLflow has no per-client setting; it reads these environment
    variables on every request (``mlflow.utils.rest_utils.http_request``), so this sets them for
    the whole process and restores them on exit: a request from another thread meanwhile gets
    the same budget. A server that does not answer raises MlflowException.
    """
    values = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    }
    with patch.dict(os.environ, values):  # restores the environment as it was on exit
        yield


def check_tracking_uri(tracking_uri: str, *, timeout_s: int = 5) -> None:
    """Pre-flight check of a tracking store, before any work starts; raises TrackingStoreError.

    ``http(s)://``: the server answers an experiments search within ``timeout_s`` seconds, with
    no retries (MLflow's credentials from the environment apply). ``sqlite:///``: the file's
    folder (or the nearest existing one above it) is writable, and an existing file is writable
    and not half-migrated; nothing is created. Any other store (a database URI such as
    ``postgresql://``, a folder) is opened once, as the run would open it, so a missing database
    driver or a database that is down is one line here rather than a traceback later.
    """
    if tracking_uri.startswith(("http://", "https://")):
        try:
            with bounded_http(max_retries=0, timeout_s=timeout_s):
                MlflowClient(tracking_uri).search_experiments(max_results=1)
        except MlflowException as err:
            reason = str(err).strip().splitlines()[0][:300]
            raise TrackingStoreError(f"MLflow tracking server {tracking_uri} does not answer: {reason}") from None
        return
    db = _sqlite_file(tracking_uri)
    if db is None:
        try:
            _open_client(tracking_uri)
        except Exception as err:  # ImportError of a driver, SQLAlchemy's OperationalError, MlflowException
            reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise TrackingStoreError(f"tracking store {tracking_uri} cannot be opened ({reason}): install its "
                                     "database driver, start the database or check the URI") from None
        return
    if db.is_dir():
        raise TrackingStoreError(f"tracking database {db} is a directory, not a file")
    if db.exists():
        if not os.access(db, os.R_OK | os.W_OK):
            raise TrackingStoreError(f"tracking database {db} is not writable")
        _check_sqlite_schema(db)
        return
    folder = db.resolve().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingStoreError(f"tracking database {db} cannot be created: {folder} is not a writable folder")


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Tracker:
    """All MLflow writes and reads of the pipeline, against one tracking store."""

    def __init__(
        self, tracking_uri: str, *, registry_uri: str | None = None, artifact_location: str | None = None
    ) -> None:
        """``registry_uri`` defaults to ``tracking_uri`` (not to $MLFLOW_REGISTRY_URI or global
        state). ``artifact_location`` is only used for experiments this tracker creates; for a
        sqlite store it defaults to ``mlartifacts`` beside the database file.

        A sqlite store (and a separate sqlite registry) is opened under an inter-process lock,
        its schema created or checked (see _open_client): raises TrackingStoreError naming a
        half-migrated or unreadable file. An http(s) store is not contacted here.
        """
        if not tracking_uri:
            # MlflowClient would silently use the global default store (MLflow 3: ./mlflow.db).
            raise ValueError("tracking_uri must be a non-empty string")
        self.tracking_uri = tracking_uri
        if registry_uri and registry_uri != tracking_uri:
            _open_client(registry_uri)  # its own schema, under its own lock
        self.client = _open_client(tracking_uri, registry_uri)
        self.artifact_location = artifact_location or _sqlite_artifact_root(tracking_uri)
        self._experiment_ids: dict[str, str] = {}

    # -- experiments and parent runs -------------------------------------------------------

    def experiment_id(self, benchmark: str, *, create: bool = True) -> str | None:
        """Id of the benchmark's experiment, created on first use (None if absent and not
        ``create``). Two steps creating it at once is fine: the loser re-reads it."""
        if benchmark in self._experiment_ids:
            return self._experiment_ids[benchmark]
        name = experiment_name(benchmark)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            if not create:
                return None
            try:
                self.client.create_experiment(name, artifact_location=self.artifact_location)
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            experiment = self.client.get_experiment_by_name(name)
        if experiment.lifecycle_stage == "deleted":
            raise ValueError(
                f"experiment {name!r} is deleted: restore it (mlflow experiments restore) "
                "or remove it for good (mlflow gc) before logging to it"
            )
        self._experiment_ids[benchmark] = experiment.experiment_id
        return experiment.experiment_id

    def start_parent(
        self, benchmark: str, run_name: str, tags: Mapping[str, str], params: Mapping[str, object]
    ) -> str:
        """Open the RUNNING parent run of a pipeline run and return its id.

        ``tags`` should hold the KFP run/pipeline name, teacher id and data fingerprint; the
        benchmark, role and git commit (also as ``mlflow.source.git.commit``, shown by the UI)
        are added unless given, and HOST_TAG / PID_TAG when ``$PTDISTILL_RUNNER_PID`` names the
        local runner's process.
        """
        commit = tags.get("git_commit") or git_commit()
        base_tags = {ROLE_TAG: "parent", "benchmark": benchmark}
        if commit:
            base_tags |= {"git_commit": commit, "mlflow.source.git.commit": commit}
        runner_pid = os.environ.get(RUNNER_PID_ENV, "")
        if runner_pid.isdigit():
            base_tags |= {HOST_TAG: socket.gethostname(), PID_TAG: runner_pid}
        param_list, structured = _format_params(params)
        with tempfile.TemporaryDirectory(prefix="ptdistill-mlflow-") as tmp:
            _stage_structured(structured, Path(tmp))
            mlflow_run = self.client.create_run(
                self.experiment_id(benchmark), tags=_clean_tags({**base_tags, **tags}), run_name=clean_text(run_name)
            )
            run_id = mlflow_run.info.run_id
            try:
                self.client.log_batch(run_id, params=param_list, synchronous=True)
                if structured:
                    self.client.log_artifacts(run_id, tmp)
            except BaseException:
                self.client.set_terminated(run_id, "FAILED")
                raise
        return run_id

    def log_parent_artifacts(
        self, parent_id: str, files: Mapping[str, PathLike] | Iterable[PathLike]
    ) -> None:
        """Attach files to the parent (search table, teacher-vs-proxy plot, report): a mapping
        of artifact path -> local path, or a list of paths kept under their base names."""
        with tempfile.TemporaryDirectory(prefix="ptdistill-mlflow-") as tmp:
            _stage(files, Path(tmp))
            self.client.log_artifacts(parent_id, tmp)

    def finish_parent(
        self, parent_id: str, metrics: Mapping[str, float] | None = None, status: str = "FINISHED"
    ) -> None:
        """Log the parent's summary metrics and close it with a terminal status."""
        if not RunStatus.is_terminated(RunStatus.from_string(status)):
            raise ValueError(f"status must be a terminal run status, got {status!r}")
        if metrics:
            self.client.log_batch(parent_id, metrics=_metrics(metrics), synchronous=True)
        self.client.set_terminated(parent_id, status)

    def fail_parent(self, parent_id: str, reason: str) -> None:
        """Mark the parent FAILED with ``reason`` (tag FAILURE_TAG), and any child a crashed
        step left RUNNING too, so the UI shows no run as still in progress."""
        reason = clean_text(reason).strip() or "unknown"
        parent = self.client.get_run(parent_id)
        for child in self._children(parent.info.experiment_id, parent_id):
            if child.info.status == "RUNNING":
                self.set_tags(child.info.run_id, {FAILURE_TAG: f"parent failed: {reason}"})
                self.client.set_terminated(child.info.run_id, "FAILED")
        self.set_tags(parent_id, {FAILURE_TAG: reason})
        self.client.set_terminated(parent_id, "FAILED")

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Tag a run (e.g. the teacher id once it is trained, the teacher-cache outcome)."""
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in _clean_tags(tags).items()], synchronous=True)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float],
                    curves: Mapping[str, Iterable[tuple[int, float]]] | None = None) -> None:
        """Log summary metrics (step 0) on a run, e.g. the teacher's and the search's on the parent, and
        ``curves`` as ``(step, value)`` histories (e.g. the teacher's validation scores per epoch)."""
        self.client.log_batch(run_id, metrics=_metrics(metrics, curves=curves), synchronous=True)

    def fail_runs(self, benchmark: str, run_name: str, reason: str) -> list[str]:
        """Fail every parent of pipeline run ``run_name`` still RUNNING; returns their ids.

        The local runner calls this when a step crashed, so no run stays half-written. Against a
        tracking server that may be down, call it inside :func:`bounded_http`.
        """
        parents = self._running_parents(benchmark, run_name)
        for parent in parents:
            self.fail_parent(parent.info.run_id, reason)
        return [parent.info.run_id for parent in parents]

    def supersede_stale_runs(self, benchmark: str, run_name: str) -> list[str]:
        """Before a local run named ``run_name`` starts: mark FAILED every RUNNING parent of that
        name whose runner process is gone, and return their ids.

        A parent is stale when its HOST_TAG is this host and the process PID_TAG no longer exists
        (or is this very process, which is starting a new run, so its earlier one has ended).
        Raises RunNameInUseError, changing nothing, if any RUNNING parent of that name is alive,
        or was started elsewhere (another host, or no local runner), where liveness cannot be told:
        two runs of one name would mix their files.
        """
        parents = self._running_parents(benchmark, run_name)
        host = socket.gethostname()
        stale, blocking = [], []
        for parent in parents:
            pid, its_host = parent.data.tags.get(PID_TAG, ""), parent.data.tags.get(HOST_TAG)
            if its_host == host and pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
                stale.append((parent.info.run_id, int(pid)))
            else:
                blocking.append((parent.info.run_id, pid, its_host))
        if blocking:
            run_id, pid, its_host = blocking[0]
            if its_host == host:
                why = f"its process {pid} on this host ({host}) is still running: wait for it to finish"
            else:
                where = f"on host {its_host}" if its_host else "outside a local runner"
                why = (f"it was started {where}, so ptdistill cannot tell whether it still runs: if it does not, mark "
                       f"it failed (python -c \"from mlflow import MlflowClient; MlflowClient('{self.tracking_uri}')"
                       f".set_terminated('{run_id}', 'FAILED')\")")
            raise RunNameInUseError(
                f"run name {run_name!r} is in use: MLflow parent run {run_id} ({experiment_name(benchmark)}) is "
                f"RUNNING and {why}, or choose another --run-name (two runs of one name would mix their files)"
            )
        for run_id, pid in stale:
            self.fail_parent(run_id, f"stale: its process {pid} on {host} is gone; superseded by a re-run")
        return [run_id for run_id, _ in stale]

    def _running_parents(self, benchmark: str, run_name: str) -> list[Run]:
        """RUNNING parents of pipeline run ``run_name`` (RUN_NAME_TAG, compared in Python)."""
        experiment = self.experiment_id(benchmark, create=False)
        if experiment is None:
            return []
        runs = self._search(experiment, f"tags.{ROLE_TAG} = {_literal('parent')} and "
                                        f"attributes.status = {_literal('RUNNING')}")
        name = clean_text(run_name)
        return [mlflow_run for mlflow_run in runs if mlflow_run.data.tags.get(RUN_NAME_TAG) == name]

    # -- students ------------------------------------------------------------------------

    def log_student(
        self,
        parent_id: str,
        run_name: str,
        params: Mapping[str, object],
        metrics: Mapping[str, float],
        curves: Mapping[str, Iterable[tuple[int, float]]],
        artifacts: Mapping[str, PathLike] | None = None,
        model_dir: PathLike | None = None,
        seconds: float | None = None,
    ) -> str:
        """Record one trained student as a FINISHED child of ``parent_id`` and return its id.

        ``params`` must include ``method`` and ``seed`` (what students are compared by) plus the
        method's hyper-parameters; ``metrics`` are final values (step 0); ``curves`` are
        ``(step, value)`` histories; ``artifacts`` maps artifact path -> local file;
        ``model_dir`` becomes the artifact directory ``model`` (what promote_champion registers);
        ``seconds`` (training time) back-dates the run's start. The child lives in the parent's experiment by construction. Inputs are checked and staged
        before the run exists; if logging then fails the child is closed as FAILED, not left
        RUNNING.
        """
        missing = {"method", "seed"} - params.keys()
        if missing:
            raise ValueError(f"params must include {sorted(missing)}")
        reserved = [p for p in artifacts or {} if PurePosixPath(p).parts[:1] in ((MODEL_ARTIFACT,), ("params",))]
        if reserved:
            raise ValueError(f"artifact paths {reserved} are reserved for model_dir and structured params")
        if model_dir is not None and not Path(model_dir).is_dir():
            raise NotADirectoryError(f"model_dir is not a directory: {model_dir}")
        parent = self.client.get_run(parent_id)
        param_list, structured = _format_params(params)
        now = get_current_time_millis()
        metric_list = _metrics(metrics, timestamp=now, curves=curves)
        tags = {
            PARENT_TAG: parent_id,
            ROLE_TAG: "student",
            "benchmark": parent.data.tags.get("benchmark", ""),
        }
        with tempfile.TemporaryDirectory(prefix="ptdistill-mlflow-") as tmp:
            root = Path(tmp)
            _stage(artifacts or {}, root)
            _stage_structured(structured, root)
            # The run is logged after training: back-date its start so the UI's Duration is the training time.
            start = get_current_time_millis() - int(seconds * 1000) if seconds is not None else None
            run_id = self.client.create_run(
                parent.info.experiment_id, start_time=start, tags=_clean_tags(tags), run_name=clean_text(run_name)
            ).info.run_id
            try:
                self.client.log_batch(run_id, metrics=metric_list, params=param_list, synchronous=True)
                if any(root.iterdir()):
                    self.client.log_artifacts(run_id, tmp)
                if model_dir is not None:
                    self.client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT)
            except BaseException:
                self.client.set_terminated(run_id, "FAILED")
                raise
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    # -- model registry ------------------------------------------------------------------

    def promote_champion(
        self, benchmark: str, child_run_id: str, score: float, higher_is_better: bool = True
    ) -> dict[str, object]:
        """Register the student's ``model`` directory as a new version of
        ``ptdistill-<benchmark>`` (tag SCORE_TAG = its validation score) and move the
        ``champion`` alias to it only if it strictly beats the current champion's score.

        Every candidate is registered, winner or not, so the version list is the history of
        what each pipeline run proposed; consumers load ``models:/<name>@champion``. A tie keeps
        the incumbent. A champion whose SCORE_TAG is missing or unreadable (e.g. set by hand) is
        never replaced automatically. The read-compare-move is not atomic: two pipelines
        promoting at the same instant can both win; the last alias write stays.

        Returns {"version": int, "champion": bool, "previous_score": float | None}.
        """
        score = float(score)
        if not math.isfinite(score):
            raise ValueError(f"validation score must be finite, got {score}")
        if not self.client.list_artifacts(child_run_id, MODEL_ARTIFACT):
            raise FileNotFoundError(f"run {child_run_id} has no '{MODEL_ARTIFACT}' artifact to register")
        name = experiment_name(benchmark)
        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        current = self.client.get_registered_model(name).aliases.get(CHAMPION_ALIAS)
        previous = None if current is None else _score(self.client.get_model_version(name, str(current)))
        version = self.client.create_model_version(
            name,
            f"runs:/{child_run_id}/{MODEL_ARTIFACT}",
            run_id=child_run_id,
            tags={SCORE_TAG: repr(score)},
        ).version
        if current is None:
            wins = True
        elif previous is None:
            wins = False  # an unscored champion was chosen by hand: leave it to a human
        else:
            wins = score > previous if higher_is_better else score < previous
        if wins:
            self.client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))
        return {"version": int(version), "champion": wins, "previous_score": previous}

    def download_model(self, benchmark: str, dst_dir: PathLike, alias: str = CHAMPION_ALIAS) -> Path:
        """Download the model directory of ``ptdistill-<benchmark>@<alias>`` into ``dst_dir``.

        Not ``mlflow.artifacts.download_artifacts("models:/...")``: in MLflow 3.17 that resolves
        the model name through the process-global registry URI even when ``tracking_uri`` and
        ``registry_uri`` are passed (and, unset, opens ./mlflow.db in the working directory).
        """
        version = self.client.get_model_version_by_alias(experiment_name(benchmark), alias)
        Path(dst_dir).mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(version.run_id, MODEL_ARTIFACT, str(dst_dir)))

    # -- reading back --------------------------------------------------------------------

    def _search(self, experiment_id: str, filter_string: str, order_by: list[str] | None = None) -> list[Run]:
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs([experiment_id], filter_string, order_by=order_by, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _children(self, experiment_id: str, parent_id: str) -> list[Run]:
        return self._search(experiment_id, f"tags.{PARENT_TAG} = {_literal(parent_id)}")

    def latest_students(self, benchmark: str, n_parents: int = 1, run_names: list[str] | None = None) -> pd.DataFrame:
        """One row per student of the ``n_parents`` most recently started parent runs (FAILED
        ones included: their finished students are real results), or of the parents named
        ``run_names``; newest parent first, then by method and seed. Columns: parent_run_id,
        parent_run_name, run_id, run_name, method, seed, TEST_METRICS, the other test_* metrics,
        then every other metric (val_*, proxy_l2_to_pstar, train_*; NaN where a run lacks one)."""
        experiment_id = self.experiment_id(benchmark, create=False)
        parents = []
        if experiment_id is not None:
            is_parent, newest_first = f"tags.{ROLE_TAG} = {_literal('parent')}", ["attributes.start_time DESC"]
            if run_names is None:
                parents = self.client.search_runs([experiment_id], is_parent, order_by=newest_first,
                                                  max_results=n_parents)
            else:  # names are compared in Python: a filter string cannot hold them safely
                wanted = {clean_text(name) for name in run_names}
                parents = [p for p in self._search(experiment_id, is_parent, newest_first) if p.info.run_name in wanted]
        rows = []
        for order, parent in enumerate(parents):
            for child in self._children(experiment_id, parent.info.run_id):
                seed = child.data.params.get("seed", "")
                rows.append(
                    {
                        "_order": order,
                        "parent_run_id": parent.info.run_id,
                        "parent_run_name": parent.info.run_name,
                        "run_id": child.info.run_id,
                        "run_name": child.info.run_name,
                        "method": child.data.params.get("method"),
                        "seed": int(seed) if seed.lstrip("-").isdigit() else seed,
                        **child.data.metrics,
                    }
                )
        columns = ["_order", "parent_run_id", "parent_run_name", "run_id", "run_name", "method", "seed"]
        columns += TEST_METRICS
        extra = {key for row in rows for key in row} - set(columns)
        columns += sorted(extra, key=lambda key: (not key.startswith("test_"), key))
        frame = pd.DataFrame(rows, columns=columns)
        frame = frame.sort_values(["_order", "method", "seed"], kind="stable").drop(columns="_order")
        return frame.reset_index(drop=True)


# -- plots ----------------------------------------------------------------------------------


def confusion_matrix_png(matrix: np.ndarray | list[list[float]], class_names: list[str], path: PathLike) -> Path:
    """Draw a confusion matrix (rows: true class, columns: predicted) to a PNG.

    Cells are coloured by the share of their true class, so rare classes are as readable as
    frequent ones, and labelled with raw counts (up to 20 classes). Uses a bare Agg canvas, not
    pyplot, so it changes no global matplotlib state and needs no display.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"matrix must be {n} x {n} to match class_names, got shape {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    side = min(3.0 + 0.45 * n, 16.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                colour = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, f"{counts[i, j]:g}", ha="center", va="center", color=colour, fontsize=8)
    fig.colorbar(image, ax=ax, label="share of true class")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def validation_curve_png(curve: Mapping[str, list[float]], selected: int, select: str, path: PathLike) -> Path:
    """Draw validation NLL and accuracy per epoch (``curve`` of :meth:`ptdistill.engine.History.selection`)
    side by side to a PNG, the ``selected`` epoch (chosen by ``select``) marked by a dashed line.

    Bare Agg canvas, as :func:`confusion_matrix_png`.
    """
    fig = Figure(figsize=(8.0, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, key, label in zip(fig.subplots(1, 2), ("nll", "accuracy"), ("validation NLL (nats)", "validation accuracy")):
        ax.plot(curve["epoch"], curve[key], marker="o", markersize=3)
        ax.axvline(selected, color="tab:red", linestyle="--", label=f"kept: epoch {selected} (select {select})")
        ax.legend(fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    fig.suptitle("validation per epoch")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def confusion_matrix_files(
    matrix: np.ndarray | list[list[float]], class_names: list[str], directory: PathLike
) -> dict[str, Path]:
    """Write ``confusion_matrix.png`` and ``confusion_matrix.json`` into ``directory`` and return
    them as the ``artifacts`` mapping log_student takes (the JSON keeps exact counts)."""
    directory = Path(directory)
    counts = np.asarray(matrix).tolist()
    return {
        "confusion_matrix.png": confusion_matrix_png(matrix, class_names, directory / "confusion_matrix.png"),
        "confusion_matrix.json": write_json_atomic(
            directory / "confusion_matrix.json", {"class_names": list(class_names), "matrix": counts}
        ),
    }
