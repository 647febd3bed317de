"""Submit and schedule against a recording stand-in of the KFP REST API (v2beta1), driven by the real kfp.Client.

The stand-in (``http.server`` on 127.0.0.1, a free port, in a thread) records every request's
method, path, query and JSON body and answers the minimal JSON that ``kfp_server_api``
deserialises: healthz, experiments list/create, runs create/get, recurringruns
create/list/enable/disable/delete. ``kfp.Client`` is never replaced, so the payloads asserted
here are the ones a real Kubeflow Pipelines installation would receive.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

kfp = pytest.importorskip("kfp")

from pipelines import remote  # noqa: E402
from pipelines.dag import compile_pipeline  # noqa: E402
from ptdistill.cli import main  # noqa: E402
from ptdistill.config import ConfigError  # noqa: E402
from ptdistill.experiments import SyntheticConfig  # noqa: E402

API = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict
    body: dict | None
    headers: dict


@dataclass
class StandIn:
    """What the fake API saw, and how it should answer."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    auth_status: int | None = None  # answer every request with 401/403
    run_states: list[str] = field(default_factory=lambda: ["SUCCEEDED"])
    experiments: list[dict] = field(default_factory=list)
    recurring_runs: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    reject_runs: bool = False  # answer run creation with HTTP 400

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    def bodies(self, method: str, path: str) -> list[dict]:
        return [r.body for r in self.requests if r.method == method and r.path == path]


def _handler(state: StandIn):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _answer(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.requests.append(Request(method, parts.path, parse_qs(parts.query), body, headers))
            if state.auth_status:
                return self._answer(state.auth_status, {"error": "unauthenticated", "code": 16,
                                                        "message": "Unauthenticated"})
            path = parts.path
            if (method, path) == ("GET", f"{API}/healthz"):
                return self._answer(200, {"multi_user": False})
            if (method, path) == ("GET", f"{API}/experiments"):
                query = parse_qs(parts.query)
                flt = json.loads(query["filter"][0]) if "filter" in query else None
                found = state.experiments
                if flt:
                    name = flt["predicates"][0].get("stringValue") or flt["predicates"][0].get("string_value")
                    found = [e for e in found if e["display_name"] == name]
                return self._answer(200, {"experiments": found, "total_size": len(found)} if found else {})
            if (method, path) == ("POST", f"{API}/experiments"):
                exp = {**body, "experiment_id": f"exp-{len(state.experiments) + 1}"}
                state.experiments.append(exp)
                return self._answer(200, exp)
            if (method, path) == ("POST", f"{API}/runs") and state.reject_runs:
                return self._answer(400, {"error": "bad", "code": 3, "message": "invalid pipeline spec: nope"})
            if (method, path) == ("POST", f"{API}/runs"):
                run = {**body, "run_id": f"run-{len(state.runs) + 1}", "state": "PENDING"}
                state.runs.append(run)
                return self._answer(200, run)
            if method == "GET" and path.startswith(f"{API}/runs/"):
                run_id = path.rsplit("/", 1)[1]
                state_now = state.run_states.pop(0) if len(state.run_states) > 1 else state.run_states[0]
                return self._answer(200, {"run_id": run_id, "display_name": "r", "state": state_now})
            if (method, path) == ("POST", f"{API}/recurringruns"):
                rr = {**body, "recurring_run_id": f"rr-{len(state.recurring_runs) + 1}", "status": "ENABLED"}
                state.recurring_runs.append(rr)
                return self._answer(200, rr)
            if (method, path) == ("GET", f"{API}/recurringruns"):
                listed = [{k: v for k, v in rr.items() if k != "pipeline_spec"} for rr in state.recurring_runs]
                return self._answer(200, {"recurringRuns": listed, "total_size": len(listed)} if listed else {})
            if method == "POST" and path.startswith(f"{API}/recurringruns/") and ":" in path:
                return self._answer(200, {})
            if method == "DELETE" and path.startswith(f"{API}/recurringruns/"):
                return self._answer(200, {})
            return self._answer(404, {"error": "not found", "code": 5, "message": f"no route {method} {path}"})

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def do_DELETE(self):
            self._handle("DELETE")

    return Handler


@pytest.fixture(autouse=True)
def _isolated_kfp(tmp_path, monkeypatch):
    """No user kfp context, host, token or MLflow URI leaks into a test."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "home/.config/kfp/context.json"))
    for name in ("KFP_HOST", "KFP_TOKEN", "KFP_NAMESPACE", "MLFLOW_TRACKING_URI", "KF_PIPELINES_ENDPOINT",
                 "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
                 "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def standin():
    state = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def compiled_spec(tmp_path_factory) -> dict:
    path = compile_pipeline(SyntheticConfig.quick(), tmp_path_factory.mktemp("spec") / "p.yaml")
    return yaml.safe_load(path.read_text())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _created(state: StandIn) -> list[str]:
    return [p for p in state.paths("POST") if p in (f"{API}/runs", f"{API}/recurringruns")]


# --- submit ---------------------------------------------------------------------------------


def test_submit_sends_full_pipeline_spec_and_runtime_parameters(standin, compiled_spec):
    config = SyntheticConfig.quick()
    run = remote.submit(config, host=standin.url, pipeline_root="gs://bucket/root",
                        tracking_uri="http://mlflow:5000", artifact_store="gs://bucket/ptdistill",
                        run_name="synthetic-test")
    assert run.run_id == "run-1"
    assert standin.paths()[0] == f"{API}/healthz"  # the reachability check comes first
    assert standin.paths("POST") == [f"{API}/experiments", f"{API}/runs"]
    assert standin.bodies("POST", f"{API}/experiments")[0]["display_name"] == "ptdistill-synthetic"

    (body,) = standin.bodies("POST", f"{API}/runs")
    assert body["display_name"] == "synthetic-test"
    assert body["experiment_id"] == "exp-1"
    spec = body["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "ptdistill-synthetic"
    assert set(spec["components"]) == set(compiled_spec["components"])
    for name in ("prepare-data", "train-teacher", "teacher-inference", "proxy-search", "report"):
        assert f"comp-{name}" in spec["components"]
        assert name in spec["root"]["dag"]["tasks"]
    assert set(spec["root"]["dag"]["tasks"]) == set(compiled_spec["root"]["dag"]["tasks"])
    assert set(spec["deploymentSpec"]["executors"]) == set(compiled_spec["deploymentSpec"]["executors"])
    # the fan-out (distill_student -> evaluate) is inside the ParallelFor component
    loops = [c for c in spec["components"].values() if "dag" in c and "distill-student" in c["dag"]["tasks"]]
    assert loops and "evaluate" in loops[0]["dag"]["tasks"]
    # caching switched on explicitly for every task
    assert all(t["cachingOptions"].get("enableCache") for t in spec["root"]["dag"]["tasks"].values())

    runtime = body["runtime_config"]
    assert runtime["pipeline_root"] == "gs://bucket/root"
    params = runtime["parameters"]
    assert json.loads(params["config_json"])["benchmark"] == "synthetic"
    assert json.loads(params["config_json"])["seeds"] == config.seeds
    assert params["runs"] == config.runs()
    assert params["tracking_uri"] == "http://mlflow:5000"
    assert params["artifact_store"] == "gs://bucket/ptdistill"
    assert params["run_name"] == "synthetic-test"
    assert params["accelerator_type"] == config.accelerator.type
    assert params["accelerator_count"] == config.accelerator.count


def test_submit_by_name_with_overrides_and_caching_off(standin):
    remote.submit("synthetic", host=standin.url, overrides=["seeds=[3, 4]"], enable_caching=False,
                  experiment="nightly")
    assert standin.bodies("POST", f"{API}/experiments")[0]["display_name"] == "nightly"
    (body,) = standin.bodies("POST", f"{API}/runs")
    params = body["runtime_config"]["parameters"]
    assert json.loads(params["config_json"])["seeds"] == [3, 4]
    assert {r["seed"] for r in params["runs"]} == {3, 4}
    tasks = body["pipeline_spec"]["root"]["dag"]["tasks"].values()
    assert not any(t["cachingOptions"].get("enableCache") for t in tasks)


def test_submit_reuses_an_existing_experiment(standin):
    standin.experiments.append({"experiment_id": "exp-old", "display_name": "ptdistill-synthetic"})
    remote.submit(SyntheticConfig.quick(), host=standin.url)
    assert f"{API}/experiments" not in standin.paths("POST")
    assert standin.bodies("POST", f"{API}/runs")[0]["experiment_id"] == "exp-old"


def test_cli_submit_wait_follows_states_until_the_end(standin, capsys):
    standin.run_states = ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]
    code = main(["submit", "synthetic", "--quick", "--host", standin.url, "--set", "seeds=[1]",
                 "--tracking-uri", "http://mlflow:5000", "--artifact-store", "gs://b/p", "--wait",
                 "--poll-seconds", "0.01"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "run id: run-1" in out
    assert f"url: {standin.url}/#/runs/details/run-1" in out
    changes = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("[") and "run run-1" in line]
    assert changes == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert "run run-1 finished: SUCCEEDED" in out
    assert standin.paths("GET").count(f"{API}/runs/run-1") == 4
    params = standin.bodies("POST", f"{API}/runs")[0]["runtime_config"]["parameters"]
    assert json.loads(params["config_json"])["seeds"] == [1]
    assert params["tracking_uri"] == "http://mlflow:5000" and params["artifact_store"] == "gs://b/p"


def test_cli_submit_wait_exits_1_when_the_run_fails(standin, capsys):
    standin.run_states = ["RUNNING", "FAILED"]
    code = main(["submit", "synthetic", "--quick", "--host", standin.url, "--wait", "--poll-seconds", "0.01"])
    assert code == 1
    assert "finished: FAILED" in capsys.readouterr().out


def test_host_from_env_and_context_file(standin, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--host URL, set \\$KFP_HOST"):
        remote.resolve_host(None)
    context = tmp_path / "home/.config/kfp/context.json"
    context.parent.mkdir(parents=True)
    context.write_text(json.dumps({"endpoint": "http://from-context:8080/", "namespace": ""}))
    assert remote.resolve_host(None) == "http://from-context:8080"
    monkeypatch.setenv("KFP_HOST", standin.url)
    assert remote.resolve_host(None) == standin.url
    assert remote.resolve_host("https://flag.example") == "https://flag.example"
    remote.submit(SyntheticConfig.quick())  # host from $KFP_HOST
    assert _created(standin) == [f"{API}/runs"]


def test_token_is_sent_as_bearer(standin, monkeypatch):
    monkeypatch.setenv("KFP_TOKEN", "s3cret")
    remote.submit(SyntheticConfig.quick(), host=standin.url)
    assert all(r.headers.get("authorization") == "Bearer s3cret" for r in standin.requests)


# --- errors before anything is sent ----------------------------------------------------------


def test_unreachable_host_fails_fast_with_a_clear_error(capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(remote.RemoteError, match="cannot reach Kubeflow Pipelines at"):
        remote.submit(SyntheticConfig.quick(), host=url)
    assert main(["submit", "synthetic", "--quick", "--host", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ptdistill submit: error: cannot reach Kubeflow Pipelines at") and "\n" not in err
    assert main(["schedule", "list", "--host", url]) == 2
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_is_clear_and_creates_nothing(standin, status, capsys):
    standin.auth_status = status
    with pytest.raises(remote.RemoteError, match=f"authentication failed .*HTTP {status}"):
        remote.submit(SyntheticConfig.quick(), host=standin.url)
    assert main(["schedule", "synthetic", "--quick", "--host", standin.url, "--cron", "0 0 3 * * *"]) == 2
    assert "authentication failed" in capsys.readouterr().err
    assert standin.paths() == [f"{API}/healthz", f"{API}/healthz"]  # only the probe, nothing created


def test_unknown_benchmark_fails_before_any_request(standin, capsys):
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'"):
        remote.submit("nope", host=standin.url)
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'"):
        remote.schedule("nope", host=standin.url, cron="0 0 3 * * *")
    assert main(["submit", "nope", "--host", standin.url]) == 2
    assert main(["schedule", "nope", "--host", standin.url, "--cron", "0 0 3 * * *"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert standin.requests == []


def test_bad_override_and_bad_cron_fail_before_any_request(standin, capsys):
    with pytest.raises(ConfigError):
        remote.submit("synthetic", host=standin.url, overrides=["no.such.key=1"])
    assert main(["schedule", "synthetic", "--host", standin.url, "--cron", "0 3 * * *"]) == 2
    err = capsys.readouterr().err
    assert "KFP expects 6 fields" in err and "'0 0 3 * * *'" in err
    assert main(["schedule", "synthetic", "--host", standin.url]) == 2
    assert "--cron is required" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max-concurrency"):
        remote.schedule("synthetic", host=standin.url, cron="0 0 3 * * *", max_concurrency=0)
    assert standin.requests == []


def test_server_error_on_create_is_one_line(standin, capsys):
    standin.reject_runs = True
    assert main(["submit", "synthetic", "--quick", "--host", standin.url]) == 2
    err = capsys.readouterr().err.strip()
    assert "HTTP 400" in err and "invalid pipeline spec" in err and "\n" not in err


def test_a_host_that_is_not_kfp_is_one_line(standin, capsys):
    assert main(["submit", "synthetic", "--quick", "--host", standin.url + "/wrong-prefix"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a Kubeflow Pipelines API" in err and "404" in err and "\n" not in err


# --- schedule ---------------------------------------------------------------------------------


def test_schedule_creates_a_recurring_run_with_cron_and_concurrency(standin, capsys, compiled_spec):
    code = main(["schedule", "synthetic", "--quick", "--host", standin.url, "--cron", "0 0 3 * * *",
                 "--max-concurrency", "2", "--no-catchup", "--tracking-uri", "http://mlflow:5000",
                 "--pipeline-root", "gs://bucket/root"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "recurring run id: rr-1" in out and f"{standin.url}/#/recurringrun/details/rr-1" in out
    assert standin.paths("POST") == [f"{API}/experiments", f"{API}/recurringruns"]
    (body,) = standin.bodies("POST", f"{API}/recurringruns")
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(body["max_concurrency"]) == 2
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["experiment_id"] == "exp-1"
    assert body["display_name"] == "ptdistill-synthetic-schedule"
    assert set(body["pipeline_spec"]["components"]) == set(compiled_spec["components"])
    assert set(body["pipeline_spec"]["root"]["dag"]["tasks"]) == set(compiled_spec["root"]["dag"]["tasks"])
    runtime = body["runtime_config"]
    assert runtime["pipeline_root"] == "gs://bucket/root"
    params = runtime["parameters"]
    assert {"config_json", "runs", "tracking_uri", "artifact_store"} <= set(params)
    assert params["tracking_uri"] == "http://mlflow:5000"
    assert params["artifact_store"] == "gs://bucket/root"
    assert "run_name" not in params  # every scheduled run gets its own KFP job name


def test_schedule_defaults_from_python(standin):
    rr = remote.schedule(SyntheticConfig.quick(), host=standin.url, cron="0 30 2 * * 1-5", name="weekdays")
    assert rr.recurring_run_id == "rr-1"
    (body,) = standin.bodies("POST", f"{API}/recurringruns")
    assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * 1-5"
    assert int(body["max_concurrency"]) == 1
    assert not body.get("no_catchup")
    assert body["display_name"] == "weekdays"


def test_schedule_list_pause_resume_delete(standin, capsys):
    assert main(["schedule", "list", "--host", standin.url]) == 0
    assert "no recurring runs" in capsys.readouterr().out
    remote.schedule(SyntheticConfig.quick(), host=standin.url, cron="0 0 3 * * *", max_concurrency=3)
    assert main(["schedule", "list", "--host", standin.url]) == 0
    out = capsys.readouterr().out
    assert "rr-1" in out and "ptdistill-synthetic-schedule" in out and "'0 0 3 * * *'" in out
    assert "max_concurrency=3" in out
    assert [len(list_) for list_ in [remote.list_schedules(standin.url)]] == [1]

    standin.requests.clear()
    assert main(["schedule", "pause", "rr-1", "--host", standin.url]) == 0
    assert main(["schedule", "resume", "rr-1", "--host", standin.url]) == 0
    assert main(["schedule", "delete", "rr-1", "--host", standin.url]) == 0
    out = capsys.readouterr().out
    assert "paused recurring run rr-1" in out and "resumed" in out and "deleted" in out
    calls = [(r.method, r.path) for r in standin.requests if r.path != f"{API}/healthz"]
    assert calls == [("POST", f"{API}/recurringruns/rr-1:disable"), ("POST", f"{API}/recurringruns/rr-1:enable"),
                     ("DELETE", f"{API}/recurringruns/rr-1")]
    assert main(["schedule", "pause", "--host", standin.url]) == 2
    assert "expected a recurring run id" in capsys.readouterr().err


# --- Vertex AI Pipelines (optional extra: google-cloud-aiplatform) ------------------------------

HAS_AIPLATFORM = importlib.util.find_spec("google.cloud") is not None and \
    importlib.util.find_spec("google.cloud.aiplatform") is not None
needs_aiplatform = pytest.mark.skipif(not HAS_AIPLATFORM, reason="google-cloud-aiplatform (ptdistill[vertex]) absent")


@pytest.fixture
def vertex_requests(monkeypatch):
    """Anonymous credentials and a recording API client: Vertex objects are built and 'sent' offline."""
    from google.cloud import aiplatform
    from google.cloud.aiplatform import pipeline_jobs

    sent = []

    class Recorder:
        def create_pipeline_job(self, parent, pipeline_job, pipeline_job_id=None, timeout=None):
            sent.append(("create_pipeline_job", parent, pipeline_job, pipeline_job_id))
            pipeline_job.name = f"{parent}/pipelineJobs/{pipeline_job_id}"
            return pipeline_job

        def create_schedule(self, parent, schedule, timeout=None):
            sent.append(("create_schedule", parent, schedule, None))
            schedule.name = f"{parent}/schedules/123"
            return schedule

    for cls in (aiplatform.PipelineJob, aiplatform.PipelineJobSchedule):
        monkeypatch.setattr(cls, "_instantiate_client", classmethod(lambda cls, *a, **k: Recorder()))
    monkeypatch.setattr(pipeline_jobs.gcs_utils, "create_gcs_bucket_for_pipeline_artifacts_if_it_does_not_exist",
                        lambda **kwargs: None)
    return sent


@pytest.mark.slow
@needs_aiplatform
def test_vertex_job_and_schedule_payloads(vertex_requests, compiled_spec):
    from google.auth.credentials import AnonymousCredentials

    creds = AnonymousCredentials()
    job = remote.vertex_submit(SyntheticConfig.quick(), project="proj", region="us-central1",
                               pipeline_root="gs://bucket/root", run_name="Synthetic_Test", credentials=creds,
                               tracking_uri="http://mlflow:5000")
    (kind, parent, payload, job_id), = vertex_requests
    assert (kind, parent, job_id) == ("create_pipeline_job", "projects/proj/locations/us-central1", "synthetic-test")
    assert job.resource_name.endswith("/pipelineJobs/synthetic-test")
    assert set(payload.pipeline_spec["components"]) == set(compiled_spec["components"])
    assert set(payload.pipeline_spec["root"]["dag"]["tasks"]) == set(compiled_spec["root"]["dag"]["tasks"])
    runtime = payload.runtime_config
    assert runtime.gcs_output_directory == "gs://bucket/root"
    params = runtime.parameter_values
    assert json.loads(params["config_json"])["benchmark"] == "synthetic"
    assert params["tracking_uri"] == "http://mlflow:5000" and params["artifact_store"] == "gs://bucket/root"
    assert params["run_name"] == "Synthetic_Test"
    assert dict(payload.labels) == {"app": "ptdistill", "benchmark": "synthetic"}

    remote.vertex_schedule("synthetic", project="proj", region="us-central1", pipeline_root="gs://bucket/root",
                           cron="0 0 3 * * *", max_concurrency=2, credentials=creds)
    kind, parent, schedule, _ = vertex_requests[-1]
    assert kind == "create_schedule" and parent == "projects/proj/locations/us-central1"
    assert schedule.cron == "0 3 * * *"  # KFP's 6 fields -> Vertex's 5
    assert schedule.max_concurrent_run_count == 2
    assert schedule.display_name == "ptdistill-synthetic-schedule"
    request = schedule.create_pipeline_job_request
    assert set(request.pipeline_job.pipeline_spec["components"]) == set(compiled_spec["components"])
    assert "run_name" not in request.pipeline_job.runtime_config.parameter_values


def test_vertex_arguments_checked_before_anything_is_built(monkeypatch, capsys):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_REGION", raising=False)
    assert main(["submit", "synthetic", "--quick", "--vertex", "--pipeline-root", "gs://b/r"]) == 2
    assert "--project P and --region R" in capsys.readouterr().err
    assert main(["submit", "synthetic", "--quick", "--vertex", "--project", "p", "--region", "r"]) == 2
    assert "--pipeline-root must be a gs:// folder" in capsys.readouterr().err
    assert main(["schedule", "synthetic", "--quick", "--vertex", "--project", "p", "--region", "r",
                 "--pipeline-root", "gs://b/r", "--cron", "30 0 3 * * *"]) == 2
    assert "seconds field must be 0" in capsys.readouterr().err


@pytest.mark.skipif(HAS_AIPLATFORM, reason="checks the message shown when the extra is missing")
def test_vertex_without_the_extra_says_how_to_install(capsys):
    assert main(["submit", "synthetic", "--quick", "--vertex", "--project", "p", "--region", "r",
                 "--pipeline-root", "gs://b/r"]) == 2
    assert "pip install 'ptdistill[vertex]'" in capsys.readouterr().err


def test_cli_submit_and_schedule_read_no_data(standin, tmp_path):
    """Data the cluster reads (a gs:// object, a path only its pods have) is passed on unread and unchanged."""
    locations = ["gs://bucket/data/table.csv", str(tmp_path / "cluster-only" / "table.csv")]
    for location in locations:
        assert main(["submit", "tabular", "--quick", "--host", standin.url, "--set", f"data.path={location}"]) == 0
    assert main(["schedule", "tabular", "--quick", "--host", standin.url, "--cron", "0 0 3 * * *",
                 "--set", f"data.path={locations[0]}"]) == 0
    bodies = standin.bodies("POST", f"{API}/runs") + standin.bodies("POST", f"{API}/recurringruns")
    sent = [json.loads(b["runtime_config"]["parameters"]["config_json"])["data"]["path"] for b in bodies]
    assert sent == [*locations, locations[0]]
