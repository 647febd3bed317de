"""Shared fixtures: tiny experiment configs, a GCS emulator, and local pipeline runs.

Local pipeline runs (``pipelines.local.run_local``) cost about 7 s per step on a 2-core box,
almost all of it process start-up (importing torch and MLflow, opening the SQLite store), so a
run takes about a minute whatever its size. To keep the suite short, the runs the tests need
are started once per session, right after collection and only if a selected test uses one of
the fixtures below, each chain in its own child process (its own kfp.local state, MLflow
SQLite file, pipeline root and artifact store). They run while the other test modules run;
a fixture waits for its chain and returns what it left behind:

* ``local_pipeline``: two runs of the same tiny config (ptloss and kl, seed 0) on a local
  artifact store; the second must hit the teacher cache;
* ``failing_pipeline``: one run whose only method asks for a GPU the machine lacks, so it fails inside
  ``distill_student``;
* ``sharded_pipeline``: one run of the ``local_pipeline`` config with teacher inference split
  over two shards (``inference_shards=2``: ParallelFor of shard tasks, then a merge task);
* ``gcs_pipeline``: two runs of the smallest config (ptloss only) with the artifact store in a
  bucket of gcp-storage-emulator (served in this process; the children get
  ``STORAGE_EMULATOR_HOST``, which ``GCSStore``'s default ``storage.Client()`` honours);
* ``text_pipeline``: the ``sst2`` benchmark twice (a GLUE-shaped local copy, a tiny random T5
  teacher through the verbalizer, a tiny BERT student; the second run hits the teacher cache),
  then the ``text`` benchmark on a CSV of sentence pairs with a tiny BERT teacher fine-tuned
  in the run (see :func:`tiny_text_configs`).

The emulator set-up follows tests/test_storage.py (its own ``emulator`` fixture is left as it
is): the real emulator server plus GCS's ``ifGenerationMatch`` check on uploads, which the
emulator ignores and the teacher cache's create-only writes rely on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

TESTS = Path(__file__).resolve().parent
#: The images tier's dockerd and image fixtures (docker_host, cpu_image, mlflow_image).
pytest_plugins = ("dockerd",)
GCS_BUCKET = "ptdistill-pipeline"
GCS_PREFIX = "ptd"
#: Longest a pipeline chain may take before its fixture gives up (they take 1-3 minutes).
CHAIN_TIMEOUT = 900
PIPELINE_FIXTURES = {"local_pipeline": "local", "failing_pipeline": "failing", "gcs_pipeline": "gcs",
                     "text_pipeline": "text", "sharded_pipeline": "sharded"}


@pytest.fixture(autouse=True, scope="session")
def object_cache(tmp_path_factory) -> Path:
    """Copies of gs:// objects (``ptdistill.storage.fetch``) go to a folder of this session, not the
    user's ``~/.cache/ptdistill``; set in the environment, so pipeline tasks inherit it."""
    folder = tmp_path_factory.mktemp("ptdistill-cache")
    saved = os.environ.get("PTDISTILL_CACHE")
    os.environ["PTDISTILL_CACHE"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("PTDISTILL_CACHE", None)
    else:
        os.environ["PTDISTILL_CACHE"] = saved


# --------------------------------------------------------------------------- tiny configs


@pytest.fixture
def one_thread():
    """torch on one thread for the test (the training loops' golden hashes were recorded so), then as before."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def new_mlp(dim: int, hidden=(32,), seed: int = 0):
    """A 3-class MLP on ``dim`` features, its initial weights drawn from ``seed``."""
    from ptdistill.engine import seed_everything
    from ptdistill.families.mlp.models import MLP, MLPConfig

    seed_everything(seed)
    return MLP(MLPConfig(input_dim=dim, num_classes=3, hidden=hidden))


def weights_sha(model) -> str:
    """First 16 hex digits of the SHA-256 of every tensor's bytes of ``model``, in name order."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def history_sha(history) -> str:
    """First 16 hex digits of the SHA-256 of a training History without its wall-clock figures, in the
    layout the engine's goldens were recorded in: before checkpoint selection (``select``),
    ``best_epoch`` was always the first epoch of highest validation accuracy, and the ECE curve,
    ``select`` and ``best_val_nll``/``best_val_ece`` did not exist."""
    import hashlib

    out = history.to_dict()
    for key in ("seconds", "examples_per_second", "val_ece", "select", "best_val_nll", "best_val_ece"):
        del out[key]
    if out["val_accuracy"]:
        best = max(range(len(out["val_accuracy"])), key=lambda i: (out["val_accuracy"][i], -i))
        out["best_epoch"], out["best_val_accuracy"] = out["val_epoch"][best], out["val_accuracy"][best]
    return hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[:16]


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound and released): a server that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_synthetic(methods: tuple[str, ...] = ("ptloss", "kl"), seeds: tuple[int, ...] = (0,)):
    """``SyntheticConfig.quick()`` shrunk further: a few hundred examples, 2 epochs, tiny MLPs.

    ``methods`` are names of ``default_methods()``; any other name becomes a method of that
    name whose loss is that name (an unknown loss: prepare_data refuses the config).
    """
    from ptdistill.experiments import MethodSpec, SyntheticConfig, default_methods

    cfg = SyntheticConfig.quick()
    known = {m.name: m for m in default_methods()}
    train = dataclasses.replace(cfg.student.train, epochs=2, batch_size=32, log_every_steps=2)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, sizes={"teacher_train": 120, "distill": 160, "validation": 80, "test": 80}),
        teacher=dataclasses.replace(cfg.teacher, hidden=[16], train=train),
        student=dataclasses.replace(cfg.student, hidden=[16], train=dataclasses.replace(train)),
        search=dataclasses.replace(cfg.search, trials=3, max_order=2),
        methods=[known.get(name, MethodSpec(name, name)) for name in methods],
        seeds=list(seeds),
    )


#: What the distill_student task of :func:`failing_in_distill_student` fails with (no such device).
DISTILL_FAILURE = "device: 'cuda:99' requested but CUDA is not available; use 'auto' or 'cpu'"


def failing_in_distill_student():
    """:func:`tiny_synthetic` with one method that passes every config check (prepare_data's
    included) but fails when its student starts training: it asks for a GPU the machine lacks."""
    from ptdistill.experiments import MethodSpec

    cfg = tiny_synthetic(("kl",))
    return dataclasses.replace(cfg, methods=[MethodSpec("kl_on_gpu_99", "kl", train={"device": "cuda:99"})])


def tiny_text_configs(root: Path) -> list:
    """The ``text_pipeline`` chain's configs: [sst2, the same sst2, text on a CSV of pairs].

    Sentences of class 1 hold "good"/"great"/"fun" and of class 0 "bad"/"awful"/"boring", so a
    tiny model can learn the task in one epoch.
    """
    import pandas as pd
    from text_fixtures import tiny_bert, tiny_t5, write_hub_split

    from ptdistill.experiments import default_config
    from ptdistill.families.text.models import HFModelSpec
    from ptdistill.families.text.trainer import TextTrainConfig

    words = (("bad", "awful", "boring"), ("good", "great", "fun"))

    def sentence(i: int, label: int) -> str:
        return f"the movie {i} was {words[label][i % 3]} and {words[label][(i + 1) % 3]}"

    names = ["negative", "positive"]
    for split, n in (("train", 180), ("validation", 40)):
        labels = [i % 2 for i in range(n)]
        write_hub_split(root / "glue", "sst2", split, {"sentence": [sentence(i, y) for i, y in enumerate(labels)],
                                                       "label": labels}, names)
    pairs = pd.DataFrame({"premise": [f"a review {i}" for i in range(160)],
                          "hypothesis": [sentence(i, i % 2) for i in range(160)],
                          "answer": ["yes" if i % 2 else "no" for i in range(160)]})
    pairs.to_csv(root / "pairs.csv", index=False)
    train = TextTrainConfig(epochs=1, batch_size=16, lr=1e-3, checkpoint_every_steps=2,
                            log_every_steps=2)
    student = HFModelSpec(str(tiny_bert(root / "student")), max_length=32)

    def shrink(config):
        config.student.model, config.student.train = student, train
        config.search.trials, config.search.max_order = 3, 2
        return config

    sst2 = shrink(default_config("sst2", quick=True))
    sst2.data.source = str(root / "glue")
    sst2.data.sizes = {"teacher_train": 60, "distill": 80, "validation": 40, "test": 40}
    sst2.teacher.model = HFModelSpec(str(tiny_t5(root / "t5")), kind="seq2seq", max_length=32, batch_size=16)
    text = shrink(default_config("text", quick=True))
    text.data.path, text.data.text_columns, text.data.label_column = str(root / "pairs.csv"), ["premise", "hypothesis"], "answer"
    text.teacher.model = HFModelSpec(str(tiny_bert(root / "teacher", seed=1)), max_length=32)
    text.teacher.fine_tune, text.teacher.train = True, train
    return [sst2, sst2, text]


@pytest.fixture(scope="session")
def tiny_config():
    """Factory of tiny synthetic configs (see :func:`tiny_synthetic`)."""
    return tiny_synthetic


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: the 2-core CI box is shared (background pipeline runs), and
    oversubscribed OpenMP threads spin instead of working."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- GCS emulator


def _honour_if_generation_match(insert):
    """Wrap the emulator's upload handler so ``ifGenerationMatch`` is checked as on GCS."""
    from gcp_storage_emulator.exceptions import NotFound

    def handler(request, response, storage, *args, **kwargs):
        wanted = request.query.get("ifGenerationMatch")
        if wanted and "upload_id" not in request.query:
            data = request.data if isinstance(request.data, dict) else {}
            if "name" in request.query:
                name = request.query["name"][0]
            else:
                name = data["meta"]["name"] if "meta" in data else data["name"]
            try:
                current = storage.get_file_obj(request.params["bucket_name"], name)["generation"]
            except NotFound:
                current = "0"
            if str(current) != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "At least one of the pre-conditions did not hold."}})
                return None
        return insert(request, response, storage, *args, **kwargs)

    return handler


@dataclass
class GCSEmulator:
    """gcp-storage-emulator served on 127.0.0.1 from a thread of this process."""

    endpoint: str
    client: Any  # google.cloud.storage.Client bound to the emulator
    _stop: Any = None

    def store(self, uri: str):
        from ptdistill.storage import GCSStore

        return GCSStore(uri, client=self.client)

    def close(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


def start_gcs_emulator(
    buckets: tuple[str, ...] = (GCS_BUCKET,), intercept: Callable[[Any], bool] | None = None
) -> GCSEmulator:
    """Serve the emulator with GCS's ``ifGenerationMatch`` check; ``intercept(handler)`` sees each
    request first and returns True when it answered it itself (test_storage injects faults)."""
    from gcp_storage_emulator import server as emu_server
    from gcp_storage_emulator.handlers import buckets as bucket_handlers
    from gcp_storage_emulator.handlers import objects
    from gcp_storage_emulator.storage import Storage
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    checked_insert = _honour_if_generation_match(objects.insert)

    class Router(emu_server.Router):
        """The emulator's router with the upload check (no module state patched)."""

        def handle(self, method):
            method = self._request_handler.headers.get("x-http-method-override") or method
            request = emu_server.Request(self._request_handler, method)
            response = emu_server.Response(self._request_handler)
            for regex, by_method in emu_server.HANDLERS:
                match = re.fullmatch(regex, request.path)
                if not match:
                    continue
                request.set_match(match)
                handler = by_method.get(method)
                if handler is None and method == "POST" and request.query.get("uploadType") \
                        and request.path.endswith("/o"):
                    handler = objects.insert  # uploads posted without the /upload prefix
                if handler is objects.insert:
                    handler = checked_insert
                if handler is None:
                    response.status = HTTPStatus.NOT_IMPLEMENTED
                else:
                    handler(request, response, self._request_handler.storage)
                break
            else:
                response.status = HTTPStatus.NOT_IMPLEMENTED
            response.close()

    class Handler(emu_server.RequestHandler):
        def _serve(self, method: str) -> None:
            if intercept is None or not intercept(self):
                Router(self).handle(method)

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def do_PUT(self):
            self._serve("PUT")

        def do_DELETE(self):
            self._serve("DELETE")

        def do_PATCH(self):
            self._serve("PATCH")

    backing = Storage(use_memory_fs=True)
    for name in buckets:
        bucket_handlers.create_bucket(name, backing)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, backing))
    endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="gcs-emulator-pipelines", daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    client = gcs.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint})
    return GCSEmulator(endpoint=endpoint, client=client, _stop=stop)


# --------------------------------------------------------------------------- pipeline chains


def _drive(spec_path: str) -> None:
    """Child-process entry point: run the spec's pipeline runs in order, write their outcomes."""
    spec = json.loads(Path(spec_path).read_text())
    from pipelines.local import run_local
    from ptdistill.experiments import config_from_dict

    outcomes = []
    for run in spec["runs"]:
        t0 = time.perf_counter()
        try:
            result = run_local(config_from_dict(run["config"]), pipeline_root=spec["pipeline_root"],
                               artifact_store=spec["artifact_store"], tracking_uri=spec["tracking_uri"],
                               run_name=run["run_name"])
        except BaseException as err:  # noqa: BLE001 - recorded for the test to judge
            outcomes.append({"run_name": run["run_name"], "ok": False, "error_type": type(err).__name__,
                             "error": str(err), "traceback": traceback.format_exc(),
                             "seconds": time.perf_counter() - t0})
            if not run.get("expect_failure"):
                break
        else:
            outcomes.append({"run_name": result.run_name, "ok": True, "seconds": result.seconds,
                             "students": result.students, "markdown": result.markdown,
                             "report_uri": result.report_uri})
    Path(spec["result"]).write_text(json.dumps(outcomes))


@dataclass
class PipelineChain:
    """Pipeline runs done one after the other in a child process, and where they left things."""

    name: str
    root: Path
    configs: list  # one ExperimentConfig per run
    run_names: list[str]
    artifact_store: str
    expect_failure: bool = False
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    outcomes: list[dict] | None = None
    started: float = 0.0
    seconds: float = 0.0

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def pipeline_root(self) -> Path:
        return self.root / "kfp"

    @property
    def log(self) -> Path:
        return self.root / "chain.log"

    def start(self) -> None:
        from ptdistill.config import to_dict

        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "cwd").mkdir(exist_ok=True)
        spec = {
            "pipeline_root": str(self.pipeline_root), "artifact_store": self.artifact_store,
            "tracking_uri": self.tracking_uri, "result": str(self.root / "outcomes.json"),
            "runs": [{"config": to_dict(c), "run_name": n, "expect_failure": self.expect_failure}
                     for c, n in zip(self.configs, self.run_names)],
        }
        (self.root / "spec.json").write_text(json.dumps(spec))
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "STORAGE_EMULATOR_HOST")}
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **self.env}
        code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); from conftest import _drive; _drive(sys.argv[1])"
        self.started = time.perf_counter()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, str(self.root / "spec.json")], cwd=self.root / "cwd", env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait(self) -> PipelineChain:
        if self.outcomes is not None:
            return self
        assert self.process is not None, f"pipeline chain {self.name} was never started"
        try:
            code = self.process.wait(timeout=max(1.0, CHAIN_TIMEOUT - (time.perf_counter() - self.started)))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"pipeline chain {self.name} took over {CHAIN_TIMEOUT} s; log tail:\n{self.log_tail()}")
        self.seconds = time.perf_counter() - self.started
        result = self.root / "outcomes.json"
        if code != 0 or not result.exists():
            pytest.fail(f"pipeline chain {self.name} exited with {code}; log tail:\n{self.log_tail()}")
        self.outcomes = json.loads(result.read_text())
        unexpected = [o for o in self.outcomes if not o["ok"]] if not self.expect_failure else []
        if unexpected or len(self.outcomes) != len(self.run_names):
            detail = unexpected[0]["traceback"] if unexpected else "runs missing"
            pytest.fail(f"pipeline chain {self.name} failed: {detail}\nlog tail:\n{self.log_tail()}")
        return self

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """Stop this chain's child process and the steps it started (its own process group)."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
            self.process.wait(timeout=30)

    def tracker(self):
        from ptdistill.tracking import Tracker

        return Tracker(self.tracking_uri)


class PipelineLauncher:
    """The session's pipeline chains and the GCS emulator they may use."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ptdistill-pipelines-"))
        self.chains: dict[str, PipelineChain] = {}
        self.emulator: GCSEmulator | None = None

    def chain(self, name: str) -> PipelineChain:
        if name not in self.chains:
            self.chains[name] = self._make(name)
            self.chains[name].start()
        return self.chains[name]

    def _make(self, name: str) -> PipelineChain:
        root = self.root / name
        if name == "local":
            config = tiny_synthetic(("ptloss", "kl"))
            return PipelineChain(name, root, [config, config], ["local-1", "local-2"], str(root / "store"))
        if name == "sharded":
            config = dataclasses.replace(tiny_synthetic(("ptloss", "kl")), inference_shards=2)
            return PipelineChain(name, root, [config], ["sharded-1"], str(root / "store"))
        if name == "failing":
            return PipelineChain(name, root, [failing_in_distill_student()], ["failing-1"], str(root / "store"),
                                 expect_failure=True)
        if name == "gcs":
            if self.emulator is None:
                self.emulator = start_gcs_emulator()
            config = tiny_synthetic(("ptloss",))
            return PipelineChain(name, root, [config, config], ["gcs-1", "gcs-2"], f"gs://{GCS_BUCKET}/{GCS_PREFIX}",
                                 env={"STORAGE_EMULATOR_HOST": self.emulator.endpoint})
        if name == "text":
            root.mkdir(parents=True)
            return PipelineChain(name, root, tiny_text_configs(root), ["sst2-1", "sst2-2", "text-1"],
                                 str(root / "store"))
        raise KeyError(name)

    def close(self) -> None:
        for chain in self.chains.values():
            chain.kill()
        if self.emulator is not None:
            self.emulator.close()
        shutil.rmtree(self.root, ignore_errors=True)


_LAUNCHER: PipelineLauncher | None = None


def _launcher() -> PipelineLauncher:
    global _LAUNCHER
    if _LAUNCHER is None:
        _LAUNCHER = PipelineLauncher()
    return _LAUNCHER


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a pipeline fixture ``pipeline``, so ``-m "not pipeline"`` leaves it
    out without a marker to forget; runs first, before ``-m`` deselects."""
    for item in items:
        if PIPELINE_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pipeline)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the pipeline chains the selected tests need (``session.items`` is what is left after
    ``-m``/``-k`` deselection), so they overlap with the other tests."""
    if session.config.option.collectonly:
        return
    wanted = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    for fixture, chain in PIPELINE_FIXTURES.items():
        if fixture in wanted:
            _launcher().chain(chain)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _LAUNCHER
    if _LAUNCHER is not None:
        _LAUNCHER.close()
        _LAUNCHER = None


@pytest.fixture(scope="session")
def local_pipeline() -> PipelineChain:
    """Two finished runs (``local-1``, ``local-2``) of the same tiny config on a local store."""
    return _launcher().chain("local").wait()


@pytest.fixture(scope="session")
def failing_pipeline() -> PipelineChain:
    """One run (``failing-1``) that fails in distill_student (:func:`failing_in_distill_student`)."""
    return _launcher().chain("failing").wait()


@pytest.fixture(scope="session")
def sharded_pipeline() -> PipelineChain:
    """One finished run (``sharded-1``) of the ``local_pipeline`` config with two inference shards."""
    return _launcher().chain("sharded").wait()


@pytest.fixture(scope="session")
def gcs_pipeline() -> PipelineChain:
    """Two finished runs (``gcs-1``, ``gcs-2``) with the artifact store in the emulator's bucket."""
    return _launcher().chain("gcs").wait()


@pytest.fixture(scope="session")
def text_pipeline() -> PipelineChain:
    """Three finished text runs: ``sst2-1``, ``sst2-2`` (teacher cache hit) and ``text-1``."""
    return _launcher().chain("text").wait()


@pytest.fixture(scope="session")
def gcs_pipeline_emulator(gcs_pipeline) -> GCSEmulator:
    """The emulator behind ``gcs_pipeline``'s bucket."""
    assert _launcher().emulator is not None
    return _launcher().emulator


# --------------------------------------------------------------------------- GCS emulator with faults

#: Buckets of the fault-injecting emulator (``faulty_gcs``): one for test_storage (and its
#: ``-root`` twin), one for test_preflight, whose tests assert the bucket stays empty.
STORAGE_TEST_BUCKET = "ptdistill-test"
PREFLIGHT_TEST_BUCKET = "ptdistill-preflight"
DROP = 0  # fault code: close the connection without answering
PASS = None  # fault code: let this request through (to fail a later one)
# Requests on objects (not buckets): the only ones counted and failed on purpose, because the
# client also sends bucket requests of its own in the background (see the module docstring).
OBJECT_REQUEST = re.compile(r"/b/[^/?]+/o(/|\?|$)")


@dataclass
class Emulator:
    """The GCS emulator with fault injection on object requests (test_storage, test_preflight)."""

    server: GCSEmulator | None
    faults: list[int | None] = field(default_factory=list)  # statuses for the next requests; DROP drops
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def client(self):  # google.cloud.storage.Client
        return self.server.client

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.requests = 0

    def intercept(self, handler) -> bool:
        """Count object requests and answer the next queued fault instead of the emulator."""
        if not OBJECT_REQUEST.search(handler.path):
            return False
        with self.lock:
            self.requests += 1
            fault = self.faults.pop(0) if self.faults else None
        if fault is None:
            return False
        handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if fault == DROP:
            handler.close_connection = True
            return True
        body = json.dumps({"error": {"code": fault, "message": "injected fault"}}).encode()
        handler.send_response(fault)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        return True


@pytest.fixture(scope="session")
def faulty_gcs():
    pytest.importorskip("gcp_storage_emulator.server")
    pytest.importorskip("google.cloud.storage")
    emu = Emulator(server=None)
    emu.server = start_gcs_emulator((STORAGE_TEST_BUCKET, STORAGE_TEST_BUCKET + "-root", PREFLIGHT_TEST_BUCKET), intercept=emu.intercept)
    try:
        yield emu
    finally:
        emu.server.close()


@pytest.fixture
def no_gcp_credentials(monkeypatch):
    """A machine with no Google Cloud credentials and no emulator: google.auth.default() fails."""
    pytest.importorskip("google.cloud.storage")
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_credentials(*args, **kwargs):
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setattr(google.auth, "default", no_credentials)
