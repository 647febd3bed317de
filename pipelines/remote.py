"""Submit and schedule a benchmark's pipeline on Kubeflow Pipelines through ``kfp.Client``.

The host comes from the ``host`` argument (``--host``), else ``$KFP_HOST``, else the ``endpoint``
key of the kfp CLI context file (``~/.config/kfp/context.json``). A bearer token comes from
``existing_token`` (``--token``) or ``$KFP_TOKEN``. Before anything is sent, the host's
``/apis/v2beta1/healthz`` is probed with a short timeout, so an unreachable host or an auth failure
is one clear :class:`RemoteError` (a ``ValueError``, which the CLI turns into exit code 2)
instead of ``kfp.Client``'s retries and stack traces.

Every call compiles the benchmark's pipeline (:func:`pipelines.dag.compile_pipeline`) into a
temporary file and sends the full pipeline spec with the run's parameters.
"""

from __future__ import annotations

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it

import contextlib
import io
import json
import os
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Callable

import kfp
import kfp_server_api
import urllib3

from pipelines.dag import compile_pipeline
from ptdistill import defaults
from ptdistill.config import to_dict
from ptdistill.experiments import ExperimentConfig, build_config
from ptdistill.hints import ptdistill_command
from ptdistill.steps.common import check_run_name, new_run_name
from ptdistill.tracking import experiment_name

HOST_ENV = "KFP_HOST"
TOKEN_ENV = "KFP_TOKEN"
NAMESPACE_ENV = "KFP_NAMESPACE"
HEALTHZ_PATH = "/apis/v2beta1/healthz"
FINAL_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")


class RemoteError(ValueError):
    """Kubeflow Pipelines could not be reached, refused the credentials, or rejected a request."""


def context_file() -> Path:
    """The kfp CLI context file (``~/.config/kfp/context.json``)."""
    return Path(os.path.expanduser("~/.config/kfp/context.json"))


def _context() -> dict[str, Any]:
    path = context_file()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve_host(host: str | None) -> str:
    """``host``, else ``$KFP_HOST``, else ``endpoint`` in the kfp context file; a ValueError if none is set."""
    host = host or os.environ.get(HOST_ENV) or _context().get("endpoint") or _context().get("host")
    if not host:
        raise RemoteError(
            f"no Kubeflow Pipelines host: pass --host URL, set ${HOST_ENV}, or put \"endpoint\" in "
            f"{context_file()} (e.g. http://localhost:8080 after "
            "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`)")
    host = host.strip().rstrip("/")
    if not host.startswith(("http://", "https://")):
        host = "https://" + host
    return host


def check_reachable(host: str, existing_token: str | None = None, timeout: float = 5.0) -> dict:
    """GET ``/apis/v2beta1/healthz`` once; a RemoteError for no answer, 401/403 or a non-KFP answer."""
    headers = {"Accept": "application/json"}
    if existing_token:
        headers["Authorization"] = f"Bearer {existing_token}"
    ctx = _context()
    if ctx.get("client_authentication_header_name") and ctx.get("client_authentication_header_value"):
        headers[ctx["client_authentication_header_name"]] = ctx["client_authentication_header_value"]
    if ctx.get("client_authentication_cookie"):
        headers["Cookie"] = ctx["client_authentication_cookie"]
    request = urllib.request.Request(host + HEALTHZ_PATH, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise RemoteError(
                f"authentication failed at {host} (HTTP {err.code} {err.reason}): pass a valid token with "
                f"--token or ${TOKEN_ENV}, or the auth cookie/header in {context_file()}") from None
        raise RemoteError(f"{host} is not a Kubeflow Pipelines API: {HEALTHZ_PATH} answered "
                          f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise RemoteError(f"cannot reach Kubeflow Pipelines at {host}: {reason} (check --host / ${HOST_ENV}; "
                          "is the port-forward or ingress up?)") from None
    try:
        return json.loads(body or b"{}")
    except json.JSONDecodeError:
        raise RemoteError(f"{host} is not a Kubeflow Pipelines API: {HEALTHZ_PATH} did not answer JSON") from None


def client(host: str | None, existing_token: str | None = None, namespace: str | None = None,
           timeout: float = 5.0):
    """A ``kfp.Client`` for a host that answered its health check (see :func:`check_reachable`)."""
    host = resolve_host(host)
    existing_token = existing_token or os.environ.get(TOKEN_ENV) or None
    namespace = namespace or os.environ.get(NAMESPACE_ENV) or "kubeflow"
    check_reachable(host, existing_token, timeout=timeout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with _quiet():
            return kfp.Client(host=host, existing_token=existing_token, namespace=namespace)


@contextlib.contextmanager
def _quiet():
    """kfp.Client prints 'Experiment details: ...' and 'Run details: ...'; we print our own lines."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@contextlib.contextmanager
def _api_errors(host: str, what: str):
    """Turn kfp_server_api / urllib3 failures during a request into one-line RemoteErrors."""
    try:
        yield
    except kfp_server_api.ApiException as err:
        detail = err.body.decode() if isinstance(err.body, bytes) else (err.body or "")
        try:
            detail = json.loads(detail).get("message") or detail
        except (json.JSONDecodeError, AttributeError):
            pass
        detail = " ".join(str(detail).split())[:300]
        if err.status in (401, 403):
            raise RemoteError(f"{what}: authentication failed at {host} (HTTP {err.status}): {detail}") from None
        raise RemoteError(f"{what}: Kubeflow Pipelines at {host} answered HTTP {err.status} {err.reason}: "
                          f"{detail}") from None
    except urllib3.exceptions.HTTPError as err:
        raise RemoteError(f"{what}: lost the connection to {host}: {err}") from None


def resolve_config(config: ExperimentConfig | str, overrides: list[str] | None = None,
                   config_file: str | Path | None = None, quick: bool = False) -> ExperimentConfig:
    """A config object from a config or a benchmark name, a YAML file and ``key=value`` overrides,
    recipe first (:func:`~ptdistill.experiments.build_config`).

    An unknown benchmark or recipe or a bad override raises ConfigError here, before any request.
    """
    return build_config(config, list(overrides or []), config_file, quick=quick)


def run_arguments(config: ExperimentConfig, tracking_uri: str | None = None, artifact_store: str | None = None,
                  pipeline_root: str | None = None, run_name: str | None = None) -> dict[str, Any]:
    """The pipeline parameters of a remote run (see ``pipelines.dag.build_pipeline``).

    ``tracking_uri`` defaults to ``$MLFLOW_TRACKING_URI``, else the pipeline's default;
    ``artifact_store`` to the pipeline root, else the pipeline's default. Without ``run_name``
    the pipeline's own placeholder (the KFP job name) stays, which is what a schedule needs.
    """
    arguments: dict[str, Any] = {
        "config_json": json.dumps(to_dict(config)),
        "runs": config.runs(),
        "tracking_uri": tracking_uri or os.environ.get(defaults.TRACKING_URI_ENV) or defaults.TRACKING_URI,
        "artifact_store": artifact_store or pipeline_root or defaults.PIPELINE_ROOT,
        "accelerator_type": config.accelerator.type,
        "accelerator_count": config.accelerator.count,
    }
    if run_name:
        arguments["run_name"] = run_name
    return arguments


@contextlib.contextmanager
def _compiled(config: ExperimentConfig):
    with tempfile.TemporaryDirectory(prefix="ptdistill-kfp-") as tmp:
        yield str(compile_pipeline(config, Path(tmp) / f"ptdistill-{config.benchmark}.yaml"))


def run_url(host: str, run_id: str) -> str:
    return f"{host}/#/runs/details/{run_id}"


def schedule_url(host: str, recurring_run_id: str) -> str:
    return f"{host}/#/recurringrun/details/{recurring_run_id}"


def submit(
    config: ExperimentConfig | str,
    host: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    pipeline_root: str | None = None,
    overrides: list[str] | None = None,
    tracking_uri: str | None = None,
    artifact_store: str | None = None,
    enable_caching: bool = True,
    wait: bool = False,
    existing_token: str | None = None,
    namespace: str | None = None,
    poll_seconds: float = 10.0,
    timeout: float | None = None,
    out=None,
):
    """Submit one run of the benchmark's pipeline; returns the ``V2beta1Run`` (the final one with ``wait``).

    ``config`` is a config object or a benchmark name; ``overrides`` are ``key=value`` strings as
    in ``--set``. Everything that can fail locally (benchmark, overrides, host, reachability,
    credentials) fails before a request that creates anything is sent.
    """
    config = resolve_config(config, overrides)
    host = resolve_host(host)
    run_name = check_run_name(run_name) if run_name is not None else new_run_name(config.benchmark)
    arguments = run_arguments(config, tracking_uri, artifact_store, pipeline_root, run_name)
    kfp_client = client(host, existing_token, namespace)
    with _compiled(config) as package, _api_errors(host, "submit"), _quiet():
        result = kfp_client.create_run_from_pipeline_package(
            package, arguments=arguments, run_name=run_name,
            experiment_name=experiment or experiment_name(config.benchmark), namespace=namespace,
            pipeline_root=pipeline_root, enable_caching=enable_caching)
    run = result.run_info
    if wait:
        return follow(kfp_client, run.run_id, host=host, poll_seconds=poll_seconds, timeout=timeout, out=out)
    return run


def run_state(run) -> str:
    """The state of a KFP run or task (``kfp_server_api`` object) as ``SUCCEEDED``, ``FAILED``, ... (PENDING when unset)."""
    state = getattr(run, "state", None) or "PENDING"
    return str(state).upper().replace("RUNTIME_STATE_", "")


def _task_progress(run) -> str:
    details = getattr(run, "run_details", None)
    tasks = getattr(details, "task_details", None) or []
    if not tasks:
        return ""
    done = sum(1 for t in tasks if run_state(t) in FINAL_STATES)
    return f", {done}/{len(tasks)} tasks finished"


def follow(kfp_client, run_id: str, host: str = "", poll_seconds: float = 10.0, timeout: float | None = None,
           out=None, sleep: Callable[[float], None] = time.sleep):
    """Poll ``get_run`` until the run ends, printing each state change with the elapsed time."""
    out = out or sys.stdout
    t0 = time.monotonic()
    last = None
    while True:
        with _api_errors(host, "wait"):
            run = kfp_client.get_run(run_id)
        state = run_state(run)
        line = f"{state}{_task_progress(run)}"
        if line != last:
            print(f"[{time.monotonic() - t0:6.0f} s] run {run_id}: {line}", file=out, flush=True)
            last = line
        if state in FINAL_STATES:
            return run
        if timeout is not None and time.monotonic() - t0 > timeout:
            raise TimeoutError(f"run {run_id} still {state} after {timeout:.0f} s")
        sleep(poll_seconds)


def validate_cron(cron: str) -> str:
    """KFP's cron has 6 fields (seconds first), e.g. ``0 0 3 * * *`` for 03:00 every day."""
    fields = (cron or "").split()
    if len(fields) != 6:
        hint = f"; for the 5-field {cron!r} use {'0 ' + ' '.join(fields)!r}" if len(fields) == 5 else ""
        raise RemoteError(f"--cron {cron!r}: KFP expects 6 fields (second minute hour day-of-month month "
                          f"day-of-week, e.g. '0 0 3 * * *' for 03:00 daily), got {len(fields)}{hint}")
    return " ".join(fields)


def schedule(
    config: ExperimentConfig | str,
    host: str | None = None,
    cron: str = "",
    max_concurrency: int = 1,
    no_catchup: bool = False,
    experiment: str | None = None,
    name: str | None = None,
    pipeline_root: str | None = None,
    overrides: list[str] | None = None,
    tracking_uri: str | None = None,
    artifact_store: str | None = None,
    enable_caching: bool = True,
    existing_token: str | None = None,
    namespace: str | None = None,
):
    """Create a recurring run of the benchmark's pipeline on a 6-field cron; returns the ``V2beta1RecurringRun``.

    Each scheduled run keeps the pipeline's run-name placeholder, so every run is its own MLflow
    parent run and artifact prefix.
    """
    config = resolve_config(config, overrides)
    cron = validate_cron(cron)
    if max_concurrency < 1:
        raise RemoteError(f"--max-concurrency: expected an integer >= 1, got {max_concurrency}")
    host = resolve_host(host)
    arguments = run_arguments(config, tracking_uri, artifact_store, pipeline_root)
    kfp_client = client(host, existing_token, namespace)
    with _compiled(config) as package, _api_errors(host, "schedule"), _quiet():
        exp = kfp_client.create_experiment(experiment or experiment_name(config.benchmark), namespace=namespace)
        return kfp_client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=name or f"ptdistill-{config.benchmark}-schedule",
            description=f"ptdistill re-distillation of {config.benchmark} on cron {cron!r}",
            cron_expression=cron, max_concurrency=max_concurrency, no_catchup=no_catchup,
            params=arguments, pipeline_package_path=package, pipeline_root=pipeline_root,
            enable_caching=enable_caching)


def list_schedules(host: str | None = None, existing_token: str | None = None, namespace: str | None = None,
                   experiment_id: str | None = None) -> list:
    """All recurring runs (every page)."""
    host = resolve_host(host)
    kfp_client = client(host, existing_token, namespace)
    found, token = [], ""
    with _api_errors(host, "schedule list"):
        while True:
            page = kfp_client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id,
                                                  namespace=namespace)
            found += page.recurring_runs or []
            token = page.next_page_token
            if not token:
                return found


def _on_schedule(action: str, recurring_run_id: str, host, existing_token, namespace):
    if not recurring_run_id:
        raise RemoteError(f"schedule {action}: expected a recurring run id (see `{ptdistill_command('schedule', 'list')}`)")
    host = resolve_host(host)
    kfp_client = client(host, existing_token, namespace)
    method = {"pause": kfp_client.disable_recurring_run, "resume": kfp_client.enable_recurring_run,
              "delete": kfp_client.delete_recurring_run}[action]
    with _api_errors(host, f"schedule {action} {recurring_run_id}"):
        return method(recurring_run_id)


def pause(recurring_run_id: str, host: str | None = None, existing_token: str | None = None,
          namespace: str | None = None):
    """Disable a recurring run (no new runs until resumed)."""
    return _on_schedule("pause", recurring_run_id, host, existing_token, namespace)


def resume(recurring_run_id: str, host: str | None = None, existing_token: str | None = None,
           namespace: str | None = None):
    """Enable a paused recurring run."""
    return _on_schedule("resume", recurring_run_id, host, existing_token, namespace)


def delete(recurring_run_id: str, host: str | None = None, existing_token: str | None = None,
           namespace: str | None = None):
    """Delete a recurring run (its past runs stay)."""
    return _on_schedule("delete", recurring_run_id, host, existing_token, namespace)


# --- Vertex AI Pipelines (optional extra ``ptdistill[vertex]``: google-cloud-aiplatform) -----------------


def _aiplatform():
    try:
        from google.cloud import aiplatform
    except ImportError:
        raise RemoteError("Vertex AI Pipelines needs google-cloud-aiplatform: "
                          "pip install 'ptdistill[vertex]'") from None
    return aiplatform


def _vertex_target(project: str | None, region: str | None, pipeline_root: str | None) -> tuple[str, str, str]:
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    region = region or os.environ.get("GOOGLE_CLOUD_REGION")
    if not project or not region:
        raise RemoteError("Vertex AI: pass --project P and --region R (or set $GOOGLE_CLOUD_PROJECT and "
                          "$GOOGLE_CLOUD_REGION)")
    if not pipeline_root or not pipeline_root.startswith("gs://"):
        raise RemoteError(f"Vertex AI: --pipeline-root must be a gs:// folder, got {pipeline_root!r}")
    return project, region, pipeline_root


def vertex_cron(cron: str) -> str:
    """KFP's 6-field cron (seconds first) as the 5-field cron Vertex AI schedules take; seconds must be 0."""
    fields = validate_cron(cron).split()
    if fields[0] != "0":
        raise RemoteError(f"--cron {cron!r}: Vertex AI schedules have minute resolution; the seconds field must be 0")
    return " ".join(fields[1:])


def _job_id(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:128]


def vertex_job(
    config: ExperimentConfig | str,
    project: str | None = None,
    region: str | None = None,
    pipeline_root: str | None = None,
    run_name: str | None = None,
    overrides: list[str] | None = None,
    tracking_uri: str | None = None,
    artifact_store: str | None = None,
    enable_caching: bool = True,
    credentials=None,
    scheduled: bool = False,
):
    """An ``aiplatform.PipelineJob`` of the benchmark's compiled spec (nothing is sent until ``submit``).

    With ``scheduled`` the run-name parameter keeps its placeholder (each scheduled run its own name).
    """
    config = resolve_config(config, overrides)
    project, region, pipeline_root = _vertex_target(project, region, pipeline_root)
    aiplatform = _aiplatform()
    run_name = None if scheduled else (check_run_name(run_name) if run_name is not None else new_run_name(config.benchmark))
    arguments = run_arguments(config, tracking_uri, artifact_store, pipeline_root, run_name)
    with _compiled(config) as package:
        return aiplatform.PipelineJob(
            display_name=run_name or f"ptdistill-{config.benchmark}", template_path=package,
            job_id=_job_id(run_name) if run_name else None, pipeline_root=pipeline_root,
            parameter_values=arguments, enable_caching=enable_caching, credentials=credentials,
            project=project, location=region, labels={"app": "ptdistill", "benchmark": config.benchmark})


def vertex_submit(config: ExperimentConfig | str, project: str | None = None, region: str | None = None,
                  pipeline_root: str | None = None, service_account: str | None = None, wait: bool = False,
                  experiment: str | None = None, **job_args):
    """Submit the benchmark's pipeline to Vertex AI Pipelines; returns the ``PipelineJob``."""
    job = vertex_job(config, project, region, pipeline_root, **job_args)
    job.submit(service_account=service_account, experiment=experiment)
    if wait:
        job.wait()
    return job


def vertex_schedule(config: ExperimentConfig | str, project: str | None = None, region: str | None = None,
                    pipeline_root: str | None = None, cron: str = "", max_concurrency: int = 1,
                    name: str | None = None, service_account: str | None = None, **job_args):
    """A Vertex AI ``PipelineJobSchedule`` of the benchmark's pipeline on KFP's 6-field cron (seconds 0)."""
    config = resolve_config(config, job_args.pop("overrides", None))
    vcron = vertex_cron(cron)
    if max_concurrency < 1:
        raise RemoteError(f"--max-concurrency: expected an integer >= 1, got {max_concurrency}")
    job = vertex_job(config, project, region, pipeline_root, scheduled=True, **job_args)
    aiplatform = _aiplatform()
    sched = aiplatform.PipelineJobSchedule(pipeline_job=job, credentials=job_args.get("credentials"),
                                           display_name=name or f"ptdistill-{config.benchmark}-schedule")
    sched.create(cron=vcron, max_concurrent_run_count=max_concurrency, service_account=service_account)
    return sched
