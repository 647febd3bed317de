"""The MLflow UI, checked as a user sees it (issue 5).

A module fixture starts a real ``mlflow server`` through ``ptdistill ui`` (SQLite backend and
``--artifacts-destination`` in a temp folder, a free port on 127.0.0.1), runs the tiny
synthetic pipeline (ptloss and kl, seed 0) against it over HTTP, and opens the experiment in
headless Chromium (the Debian package, installed here when missing: a one-time cost).

The runs page nests the students under their parent run, collapsed, and shows no metric
columns by default (column choices live in the browser's local storage). So the fixture saves
a shared view of the runs table the way the UI's "share" button does (an experiment tag
``mlflow.sharedViewState.<key>`` holding the view state as JSON, opened with
``?viewStateShareKey=<key>``): filtered on the student role tag, which lists the students flat,
with the ``test_accuracy`` and ``method`` columns. The tests also read the unfiltered page
(the parent run) and each student's own run page. Chromium renders each page with ``--dump-dom`` under a virtual time
budget, and a screenshot of the shared runs view is kept in ``tests/artifacts/`` (git-ignore
``tests/artifacts/``); its path is printed.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port, tiny_synthetic

#: A real pipeline run against a real server, read by Chromium.
pytestmark = [pytest.mark.browser, pytest.mark.pipeline]
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
ARTIFACTS = TESTS / "artifacts"
CHROMIUM = "/usr/bin/chromium"
#: The students the tiny config trains and the name the evaluation step gives each one.
STUDENTS = ("ptloss-seed0", "kl-seed0")
SERVER_START_TIMEOUT = 150  # four uvicorn workers importing MLflow on a busy 2-core box
APT_TIMEOUT = 900


# --------------------------------------------------------------------------- Chromium


def _ensure_chromium() -> str:
    """``/usr/bin/chromium``, installed from Debian's archive when missing (root and apt only)."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} is missing and installing it needs root")
    if shutil.which("apt-get") is None:
        pytest.skip(f"{CHROMIUM} is missing and apt-get is not available to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(cmd)} took over {APT_TIMEOUT} s")
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    assert os.path.exists(CHROMIUM), f"apt-get installed chromium but {CHROMIUM} is missing"
    return CHROMIUM


def _chromium(binary: str, url: str, *extra: str, budget_ms: int = 20000, timeout: float = 120) -> str:
    """Run headless Chromium on ``url`` with a fresh profile; returns its stdout."""
    profile = tempfile.mkdtemp(prefix="ptdistill-chromium-")
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1600,1000",
           f"--virtual-time-budget={budget_ms}", *extra, url]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"chromium took over {timeout} s on {url}: {(err.stderr or b'')[-2000:]!r}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, f"chromium failed ({done.returncode}) on {url}:\n{done.stderr[-3000:]}"
    return done.stdout


def _dump_dom(binary: str, url: str) -> str:
    return _chromium(binary, url, "--dump-dom")


def _screenshot(binary: str, url: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    _chromium(binary, url, f"--screenshot={path}", "--hide-scrollbars")
    assert path.exists() and path.stat().st_size > 10_000, f"no screenshot written to {path}"
    return path


# --------------------------------------------------------------------------- server



def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.status, response.read().decode(errors="replace")


@dataclass
class UIServer:
    url: str
    root: Path
    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to the server's own process group (ptdistill ui, mlflow server,
        its uvicorn workers)."""
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                # the group may outlive its leader (uvicorn workers): check it is gone
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline:
                    os.killpg(self.process.pid, 0)
                    time.sleep(0.2)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue


def _start_server(root: Path) -> UIServer:
    port = free_port()
    db = root / "mlflow.db"
    log = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # The server's job runner (a huey consumer for GenAI jobs) is of no use here and costs a core.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    script = Path(sys.executable).parent / "ptdistill"  # the console script a user runs
    launcher = [str(script)] if script.exists() else \
        [sys.executable, "-c", "import sys; from ptdistill.cli import main; sys.exit(main())"]
    cmd = [*launcher, "ui", "--port", str(port), "--tracking-uri", f"sqlite:///{db}", "--artifacts-destination", str(root / "artifacts")]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = UIServer(f"http://127.0.0.1:{port}", root, process, log)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"ptdistill ui exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if _get(f"{server.url}/health", timeout=2) == (200, "OK"):
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"mlflow server not healthy after {SERVER_START_TIMEOUT} s:\n{server.log_tail()}")
        time.sleep(0.5)


# --------------------------------------------------------------------------- fixture


@dataclass
class UISession:
    server: UIServer
    chromium: str
    experiment_id: str
    students: dict[str, dict]  # run name -> students.json record (run_id, test_accuracy, ...)
    parent_run_name: str
    share_key: str  # a shared view of the runs table: the students, with test_accuracy
    seconds: dict[str, float]


def _share_students_view(tracking_uri: str, experiment_id: str) -> str:
    """Save a shared runs-table view (as the UI's share button does) and return its key."""
    from mlflow import MlflowClient

    from ptdistill.tracking import ROLE_TAG

    state = {
        "searchFilter": f"tags.`{ROLE_TAG}` = 'student'",
        # MLflow 3.17's UI applies a shared view's (or URL's) searchFilter only if the sort also
        # differs from the default (Created): sort by test_accuracy, best first.
        "orderByKey": "metrics.`test_accuracy`",
        "orderByAsc": False,
        "selectedColumns": ["attributes.`Duration`", "params.`method`", "metrics.`test_accuracy`"],
    }
    value = json.dumps(state)
    key = hashlib.sha256(value.encode()).hexdigest()
    MlflowClient(tracking_uri).set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{key}", value)
    return key


@pytest.fixture(scope="module")
def ui() -> UISession:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    chromium = _ensure_chromium()
    seconds["chromium_install"] = time.perf_counter() - t0
    root = Path(tempfile.mkdtemp(prefix="ptdistill-ui-"))
    server = None
    old_omp = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        t0 = time.perf_counter()
        server = _start_server(root)
        seconds["server_start"] = time.perf_counter() - t0

        from pipelines.local import run_local
        from ptdistill.tracking import Tracker

        t0 = time.perf_counter()
        original_print = builtins.print
        result = run_local(tiny_synthetic(("ptloss", "kl"), (0,)), pipeline_root=root / "kfp",
                           artifact_store=str(root / "store"), tracking_uri=server.url, run_name="ui-1")
        seconds["pipeline"] = time.perf_counter() - t0
        # kfp.local's per-task print indentation must not outlive the in-process run.
        assert builtins.print is original_print
        students = {f"{s['method']}-seed{s['seed']}": s for s in result.students}
        assert set(students) == set(STUDENTS), result.students
        experiment_id = Tracker(server.url).experiment_id("synthetic", create=False)
        assert experiment_id is not None
        share_key = _share_students_view(server.url, experiment_id)
        yield UISession(server, chromium, experiment_id, students, result.run_name, share_key, seconds)
    finally:
        if old_omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old_omp
        if server is not None:
            server.stop()
        print(f"\nMLflow UI test timings: { {k: round(v, 1) for k, v in seconds.items()} }")
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def _text(dom: str) -> str:
    """The page's visible-ish text: tags and scripts dropped, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", dom)
    for entity, char in (("&nbsp;", " "), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'),
                         ("&#39;", "'")):
        text = text.replace(entity, char)
    return re.sub(r"\s+", " ", text)


def _shows_value(text: str, value: float) -> str | None:
    """The number on the page that is ``value`` as the UI formats it (rounded to the digits
    it shows, at least 2 decimals), or None."""
    for match in re.finditer(r"(?<![\w.])(\d+\.(\d{2,}))(?![\w.])", text):
        shown, decimals = match.group(1), len(match.group(2))
        if abs(float(shown) - value) <= 0.5 * 10 ** -decimals + 1e-12:
            return shown
    return None


def _runs_url(session: UISession, shared: bool = False) -> str:
    url = f"{session.server.url}/#/experiments/{session.experiment_id}/runs"
    if shared:
        url += "?" + urllib.parse.urlencode({"viewStateShareKey": session.share_key})
    return url


# --------------------------------------------------------------------------- tests


def test_runs_page_shows_the_students_and_their_test_accuracy(ui: UISession):
    url = _runs_url(ui, shared=True)
    text = _text(_dump_dom(ui.chromium, url))
    assert "shared view" in text, f"the shared view did not open on {url}: {text[:3000]}"
    assert "2 matching runs" in text, text[:3000]
    assert "ptdistill-synthetic" in text, f"experiment name not on {url}: {text[:2000]}"
    for name in STUDENTS:
        assert name in text, f"{name} not on {url}: {text[:3000]}"
    assert "test_accuracy" in text, f"test_accuracy column not on {url}: {text[:3000]}"
    for name in STUDENTS:
        value = ui.students[name]["test_accuracy"]
        assert _shows_value(text, value), f"{name}'s test_accuracy {value} not on {url}: {text[:3000]}"


def test_runs_page_without_filter_shows_the_parent_run(ui: UISession):
    text = _text(_dump_dom(ui.chromium, _runs_url(ui)))
    assert ui.parent_run_name in text, text[:3000]
    assert "3 matching runs" in text, text[:3000]  # the parent and its two students, nested


@pytest.mark.parametrize("name", STUDENTS)
def test_student_run_page_shows_test_accuracy(ui: UISession, name: str):
    student = ui.students[name]
    url = f"{ui.server.url}/#/experiments/{ui.experiment_id}/runs/{student['run_id']}"
    text = _text(_dump_dom(ui.chromium, url))
    assert name in text, f"{name} not on its run page {url}: {text[:3000]}"
    assert "test_accuracy" in text, f"test_accuracy not on {url}: {text[:3000]}"
    value = student["test_accuracy"]
    assert _shows_value(text, value), f"{name}'s test_accuracy {value} not on {url}: {text[:3000]}"


def test_screenshot_of_the_runs_page(ui: UISession):
    path = _screenshot(ui.chromium, _runs_url(ui, shared=True), ARTIFACTS / "mlflow_ui_runs.png")
    print(f"\nMLflow UI screenshot: {path}")
    from PIL import Image

    with Image.open(path) as image:
        assert image.size == (1600, 1000)
        colours = image.convert("L").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, "the screenshot is blank"
