"""``ptdistill run --runner docker``: its pre-flight checks (no daemon needed), and the ``images`` tier.

The checks run against real things: an unreachable socket path as DOCKER_HOST, real folders
with real owners and modes (the ownership tests run as root and hand folders to uid 1000, or run
the check itself as uid 1000 or 1001 in a child process), real key files. The ``images`` tier
runs the quick synthetic pipeline in the CPU image through a real daemon (tests/dockerd.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from pipelines import containers
from pipelines.containers import DockerCheckError

ROOT = Path(__file__).resolve().parent.parent
IMAGE_UID = 1000

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes file owners: needs root")


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 900,
         ) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "ptdistill", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)


# --- the daemon ---------------------------------------------------------------------------------

def test_unreachable_daemon_is_one_line_naming_the_socket(tmp_path, monkeypatch):
    sock = tmp_path / "no-daemon" / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    with pytest.raises(DockerCheckError) as info:
        containers.connect(timeout_s=2)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"Docker daemon at unix://{sock} does not answer (")
    assert "export DOCKER_HOST=unix:///PATH/docker.sock" in message and "--runner subprocess" in message


@pytest.mark.slow
def test_cli_refuses_before_writing_anything(tmp_path):
    """Exit 2 through the CLI's error path; no pipeline root, lock, tracking file or log is created."""
    work = tmp_path / "work"
    work.mkdir()
    sock = tmp_path / "docker.sock"
    proc = _cli("run", "synthetic", "--quick", "--runner", "docker", cwd=work,
                env={"DOCKER_HOST": f"unix://{sock}", "MLFLOW_TRACKING_URI": ""}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith(f"ptdistill run: error: Docker daemon at unix://{sock} does not answer")
    assert list(work.iterdir()) == []


# --- where things live ------------------------------------------------------------------------

def test_sqlite_tracking_outside_the_pipeline_root_is_refused(tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(DockerCheckError) as info:
        containers.check_placement(root, str(root), f"sqlite:///{tmp_path}/mlflow.db", {})
    assert str(info.value) == (
        f"tracking database {tmp_path}/mlflow.db is outside the pipeline root (the only folder mounted into the task "
        f"containers is the pipeline root {root}): use --tracking-uri sqlite:///{root}/mlflow.db (the --runner docker "
        "default when MLFLOW_TRACKING_URI is unset) or an http:// MLflow server")
    containers.check_placement(root, str(root), f"sqlite:///{root}/mlflow.db", {})
    containers.check_placement(root, str(root), "http://127.0.0.1:5000", {})


def test_local_artifact_store_outside_the_pipeline_root_is_refused(tmp_path):
    root = tmp_path / "runs"
    for store in (str(tmp_path / "store"), f"file://{tmp_path}/store"):
        with pytest.raises(DockerCheckError, match=r"^artifact store .*/store is outside the pipeline root"):
            containers.check_placement(root, store, "http://127.0.0.1:5000", {})
    containers.check_placement(root, str(root / "store"), "http://127.0.0.1:5000", {})
    containers.check_placement(root, f"file://{root}/store", "http://127.0.0.1:5000", {})
    containers.check_placement(root, "gs://bucket/ptdistill", "http://127.0.0.1:5000", {})


def test_config_paths_must_be_absolute_and_under_the_pipeline_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    (root / "data").mkdir(parents=True)
    inside, outside = root / "data" / "t.csv", tmp_path / "t.csv"
    inside.write_text("a,b\n")
    outside.write_text("a,b\n")
    http = "http://127.0.0.1:5000"
    config = {"data": {"path": str(inside), "source": "glue"}, "teacher": {"model": {"name_or_path": "bert-base"}}}
    containers.check_placement(root, str(root), http, config)  # hub ids and missing names are not paths
    with pytest.raises(DockerCheckError) as info:
        containers.check_placement(root, str(root), http, {"data": {"path": str(outside)}})
    assert str(info.value).startswith(f"config data.path={outside} is outside the pipeline root")
    monkeypatch.chdir(root)
    containers.check_placement(root, str(root), http, {"methods": [{"name": "data"}]})  # not a path key
    with pytest.raises(DockerCheckError) as info:
        containers.check_placement(root, str(root), http, {"data": {"path": "data/t.csv"}})
    assert str(info.value) == ("config data.path=data/t.csv: a relative path means another folder inside a "
                               f"task container: give it as {inside}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DockerCheckError) as info:
        containers.check_placement(root, str(root), http, {"data": {"path": "t.csv"}})
    assert str(info.value) == ("config data.path=t.csv: a relative path means another folder inside a task "
                               f"container: copy it under the pipeline root {root} and give its absolute path")


def test_gs_uris_are_the_store_and_config_paths():
    config = {"data": {"path": "gs://b/t.csv", "label_column": "gs://not-a-path-key"},
              "teacher": {"model": {"name_or_path": "bert-base"}, "outputs": "gs://b/probs.npy"}}
    assert containers.gcs_uris("gs://b/p", config) == ["gs://b/p", "gs://b/t.csv", "gs://b/probs.npy"]
    assert containers.gcs_uris("/tmp/runs", {"data": {"path": "/tmp/x.csv"}}) == []


def test_gs_needs_credentials_the_containers_can_use(tmp_path):
    with pytest.raises(DockerCheckError) as info:
        containers.credentials_plan({}, ["gs://b/t.csv"], IMAGE_UID, IMAGE_UID)
    assert str(info.value) == (
        "gs://b/t.csv: task containers see no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS to a "
        "service-account key file (it is mounted read-only into each task), or STORAGE_EMULATOR_HOST for an emulator")
    plan = containers.credentials_plan({"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}, ["gs://b/p"], IMAGE_UID,
                                       IMAGE_UID)
    assert plan.mounts == [] and plan.environment == {}
    missing = tmp_path / "missing.json"
    with pytest.raises(DockerCheckError, match=f"^GOOGLE_APPLICATION_CREDENTIALS={missing}: no such file$"):
        containers.credentials_plan({"GOOGLE_APPLICATION_CREDENTIALS": str(missing)}, ["gs://b/p"], IMAGE_UID,
                                    IMAGE_UID)
    # A run that uses no gs:// neither checks nor passes the key file.
    plan = containers.credentials_plan({"GOOGLE_APPLICATION_CREDENTIALS": str(missing)}, [], IMAGE_UID, IMAGE_UID)
    assert plan.mounts == [] and plan.environment == {}
    key = tmp_path / "key.json"
    key.write_text("{}")
    key.chmod(0o644)
    plan = containers.credentials_plan({"GOOGLE_APPLICATION_CREDENTIALS": str(key)}, ["gs://b/p"], IMAGE_UID,
                                       IMAGE_UID)
    assert plan.environment == {"GOOGLE_APPLICATION_CREDENTIALS": str(key)}
    [mount] = plan.mounts
    assert (mount["Source"], mount["Target"], mount["ReadOnly"]) == (str(key), str(key), True)


@as_root
def test_key_file_the_image_user_cannot_read_is_refused(tmp_path):
    key = tmp_path / "key.json"
    key.write_text("{}")
    key.chmod(0o600)  # root's
    with pytest.raises(DockerCheckError) as info:
        containers.credentials_plan({"GOOGLE_APPLICATION_CREDENTIALS": str(key)}, ["gs://b/p"], IMAGE_UID, IMAGE_UID)
    assert str(info.value).startswith(f"GOOGLE_APPLICATION_CREDENTIALS={key} cannot be read by uid 1000, the task "
                                      f"images' user (it is mounted read-only into each task): `chmod o+r {key}`")


def test_task_environment_passes_settings_not_the_host_commit():
    environ = {"MLFLOW_TRACKING_TOKEN": "t", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:1", "PTDISTILL_RUNNER_PID": "7",
               "PTDISTILL_SOLO_THREADS": "2", "PTDISTILL_GIT_COMMIT": "abc", "HOME": "/root", "PATH": "/usr/bin",
               "OMP_NUM_THREADS": "1", "PYTHONSAFEPATH": "1", "HF_HUB_OFFLINE": "1",
               "GOOGLE_APPLICATION_CREDENTIALS": "/root/key.json", "GOOGLE_CLOUD_PROJECT": "p"}
    assert containers.task_environment(environ) == {
        "MLFLOW_TRACKING_TOKEN": "t", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:1", "PTDISTILL_RUNNER_PID": "7",
        "PTDISTILL_SOLO_THREADS": "2", "OMP_NUM_THREADS": "1", "PYTHONSAFEPATH": "1", "HF_HUB_OFFLINE": "1",
        "GOOGLE_CLOUD_PROJECT": "p"}


# --- images -----------------------------------------------------------------------------------

def test_pipeline_images_name_each_components_image():
    from components.images import CPU_IMAGE, GPU_IMAGE
    from pipelines.dag import build_pipeline
    from ptdistill.experiments import default_config

    images = containers.pipeline_images(build_pipeline(default_config("synthetic", quick=True)))
    assert images == {
        CPU_IMAGE: ["evaluate", "prepare-data", "proxy-search", "report"],
        GPU_IMAGE: ["distill-student", "teacher-inference", "train-teacher"],
    }


def test_missing_image_hint_names_the_build_command_and_the_override():
    cpu, gpu = "ghcr.io/ptdistill/ptdistill-cpu:0.1.0", "ghcr.io/ptdistill/ptdistill-gpu:0.1.0"
    assert containers._how_to_get(cpu, cpu, gpu) == (
        "build it with `images/build.sh --load cpu` and export the PTDISTILL_CPU_IMAGE=... line it prints, "
        "or set PTDISTILL_CPU_IMAGE to an image this daemon has")
    assert containers._how_to_get(gpu, cpu, gpu, ["ptdistill-cpu:abc1234", "ptdistill-base:bookworm-1"]) == (
        "build it with `images/build.sh --load gpu` and export the PTDISTILL_GPU_IMAGE=... line it prints, "
        f"or set PTDISTILL_GPU_IMAGE to an image this daemon has (on a machine without a GPU, the CPU image serves: "
        f"PTDISTILL_GPU_IMAGE={cpu})")
    assert containers._how_to_get(cpu, cpu, gpu, ["ptdistill-cpu:abc1234", "reg.io/p/ptdistill-cpu:0de"]) == (
        "the daemon has ptdistill-cpu:abc1234: `export PTDISTILL_CPU_IMAGE=ptdistill-cpu:abc1234`, or build it with "
        "`images/build.sh --load cpu` and export the PTDISTILL_CPU_IMAGE=... line it prints, or set PTDISTILL_CPU_IMAGE "
        "to an image this daemon has")
    assert containers._how_to_get("other:1", cpu, gpu) == "build or load it into this daemon"
    assert containers._how_to_get("reg.io/other:2", cpu, gpu, ["other:1"]) == "the daemon has other:1"


# --- the image user may write the pipeline root -----------------------------------------------

def _tree(root: Path) -> dict[str, Path]:
    paths = {"root": root, "run": root / "synthetic" / "r1", "db": root / "mlflow.db", "log": root / "logs" / "a.log"}
    paths["run"].mkdir(parents=True)
    paths["log"].parent.mkdir()
    for key in ("db", "log"):
        paths[key].write_text("x")
    return paths


@as_root
def test_not_writable_reads_owner_group_and_other_bits(tmp_path):
    paths = _tree(tmp_path / "runs")
    for path in paths.values():
        os.chown(path, 0, 0)
    for folder in (paths["root"], paths["run"].parent, paths["run"], paths["log"].parent):
        folder.chmod(0o755)
    paths["db"].chmod(0o666)  # other may write
    paths["log"].chmod(0o644)
    os.chown(paths["run"], IMAGE_UID, 0)  # owner
    os.chown(paths["run"].parent, 0, IMAGE_UID)
    paths["run"].parent.chmod(0o775)  # group
    found = set(containers.not_writable(paths["root"], IMAGE_UID, IMAGE_UID))
    assert found == {paths["root"], paths["log"].parent, paths["log"]}


@as_root
def test_root_runner_gives_the_pipeline_root_to_the_image_user(tmp_path):
    paths = _tree(tmp_path / "runs")
    paths["db"].chmod(0o600)
    link = paths["root"] / "elsewhere"
    link.symlink_to(tmp_path)  # never followed
    before = tmp_path.stat()
    changed = containers.claim_pipeline_root(paths["root"], IMAGE_UID, IMAGE_UID)
    assert changed == 6  # root, synthetic, r1, logs, mlflow.db, a.log
    assert list(containers.not_writable(paths["root"], IMAGE_UID, IMAGE_UID)) == []
    assert {(p.stat().st_uid, p.stat().st_gid) for p in paths.values()} == {(IMAGE_UID, IMAGE_UID)}
    assert stat.S_IMODE(paths["db"].stat().st_mode) == 0o600
    assert (tmp_path.stat().st_uid, tmp_path.stat().st_mode) == (before.st_uid, before.st_mode)
    assert containers.claim_pipeline_root(paths["root"], IMAGE_UID, IMAGE_UID) == 0


def _claim_as(uid: int, root: Path) -> subprocess.CompletedProcess[str]:
    """claim_pipeline_root in a child whose effective uid and gid are ``uid`` (this Python lives under /root,
    which other users cannot enter: the child starts as root, imports, then drops to ``uid``)."""
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from pipelines.containers import DockerCheckError, claim_pipeline_root
        os.setegid({uid})
        os.seteuid({uid})
        try:
            claim_pipeline_root(Path({str(root)!r}), {IMAGE_UID}, {IMAGE_UID})
        except DockerCheckError as err:
            print(err)
        else:
            print("ok")
    """)
    return subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}, timeout=120)


@pytest.fixture
def open_tmp():
    """A fresh folder under /tmp that every user may enter (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="ptdistill-claim-", dir="/tmp"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.slow
@as_root
def test_image_user_is_told_which_folder_it_cannot_write(open_tmp):
    tmp_path = open_tmp
    paths = _tree(tmp_path / "runs")
    for path in (*paths.values(), paths["run"].parent, paths["log"].parent):
        os.chown(path, IMAGE_UID, IMAGE_UID)
    os.chown(paths["run"], 0, 0)  # left by an earlier run as root
    proc = _claim_as(IMAGE_UID, paths["root"])
    assert proc.stdout.strip() == (
        f"{paths['run']} is not writable by uid 1000, the task images' user: "
        f"`sudo chown -R 1000:1000 {paths['root']}`, or choose another --pipeline-root"), proc.stderr
    os.chown(paths["run"], IMAGE_UID, IMAGE_UID)
    assert _claim_as(IMAGE_UID, paths["root"]).stdout.strip() == "ok"


@pytest.mark.slow
@as_root
def test_a_runner_that_is_not_the_image_user_is_refused(open_tmp):
    tmp_path = open_tmp
    proc = _claim_as(1001, tmp_path / "runs")
    assert proc.stdout.strip() == (
        f"the task images run as uid 1000 and you are uid 1001: their files in the pipeline root {tmp_path / 'runs'} "
        "could not be removed by this run's clean-up: run as uid 1000 or as root, or use --runner subprocess"), \
        proc.stderr


# --- the images tier: the pipeline in the CPU image through a real daemon ----------------------

def _students(pipeline_root: Path, run_name: str) -> dict[str, float]:
    """method-seed -> test accuracy, from the run's report in its (local) artifact store."""
    rows = json.loads((pipeline_root / "synthetic" / run_name / "report" / "students.json").read_text())
    return {f"{row['method']}-seed{row['seed']}": row["test_accuracy"] for row in rows}


def _docker_env(docker_host, cpu_image: str) -> dict[str, str]:
    """The daemon, and the CPU image for every component (this machine has no GPU)."""
    return {"DOCKER_HOST": docker_host.host, "PTDISTILL_CPU_IMAGE": cpu_image, "PTDISTILL_GPU_IMAGE": cpu_image,
            "MLFLOW_TRACKING_URI": ""}


def _run_containers(docker_host, run_name: str, *, running: bool = False, task: str = "") -> list[str]:
    """Label values of the run's task containers (only running ones, only those whose command runs ``task``)."""
    proc = docker_host.docker("ps", *(() if running else ("-a",)), "--no-trunc", "--filter",
                              f"label={containers.RUN_LABEL}", "--format",
                              '{{.Label "%s"}} {{.Command}}' % containers.RUN_LABEL)
    return [line.split(" ", 1)[0] for line in proc.stdout.splitlines()
            if line.split(" ", 1)[0].endswith(f":{run_name}") and task in line]


@pytest.mark.images
def test_a_missing_image_is_one_line_before_any_work(docker_host, cpu_image, tmp_path):
    """The GPU components' image is not in the daemon: exit 2 naming it, its components, the build command
    and the CPU image as the way out; nothing is written, nothing pulled."""
    missing = "ptdistill-test-absent:1"  # no tag of that name in the daemon, unlike ptdistill-gpu:*
    env = {**_docker_env(docker_host, cpu_image), "PTDISTILL_GPU_IMAGE": missing}
    proc = _cli("run", "synthetic", "--quick", "--runner", "docker", cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"ptdistill run: error: not in the Docker daemon at {docker_host.host}: image {missing} (components "
        "distill-student, teacher-inference, train-teacher): build it with `images/build.sh --load gpu` and export the "
        "PTDISTILL_GPU_IMAGE=... line it prints, or set PTDISTILL_GPU_IMAGE to an image this daemon has (on a machine "
        f"without a GPU, the CPU image serves: PTDISTILL_GPU_IMAGE={cpu_image})"]
    assert list(tmp_path.iterdir()) == []
    assert docker_host.docker("images", "-q", missing).stdout.strip() == ""


@pytest.fixture(scope="module")
def subprocess_students(tmp_path_factory) -> dict[str, float]:
    """The quick synthetic run's students with the subprocess runner (what every docker run must match)."""
    tmp = tmp_path_factory.mktemp("subprocess")
    proc = _cli("run", "synthetic", "--quick", "--pipeline-root", str(tmp / "runs"), "--tracking-uri",
                f"sqlite:///{tmp}/mlflow.db", "--run-name", "sub", cwd=tmp, env={"MLFLOW_TRACKING_URI": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    students = _students(tmp / "runs", "sub")
    assert sorted(students) == ["kl-seed0", "ptloss-seed0"]
    return students


@pytest.mark.images
def test_docker_runner_matches_the_subprocess_runner(docker_host, cpu_image, subprocess_students, tmp_path):
    """The quick synthetic pipeline in the CPU image gives the subprocess runner's students, to the last bit;
    its tracking file (the docker runner's default) is in the pipeline root, its parent run FINISHED."""
    from ptdistill.tracking import Tracker

    dock = tmp_path / "docker"
    proc = _cli("run", "synthetic", "--quick", "--runner", "docker", "--pipeline-root", str(dock), "--run-name", "dock",
                cwd=tmp_path, env=_docker_env(docker_host, cpu_image))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert "via kfp.local (docker runner)" in proc.stdout
    assert _students(dock, "dock") == subprocess_students
    assert f"sqlite:///{dock}/mlflow.db" in proc.stdout  # the default tracking store, under the pipeline root
    tracker = Tracker(f"sqlite:///{dock}/mlflow.db")
    [parent] = tracker.client.search_runs([tracker.experiment_id("synthetic")], "attributes.run_name = 'dock'")
    assert parent.info.status == "FINISHED"
    assert (dock / "logs" / "dock").is_dir()
    assert _run_containers(docker_host, "dock", running=True) == []


@pytest.mark.images
def test_docker_runner_uses_a_gcs_store_through_the_emulator(docker_host, cpu_image, subprocess_students, tmp_path):
    """Artifact store in a bucket of the GCS emulator on the host's 127.0.0.1: the tasks get STORAGE_EMULATOR_HOST,
    reach it over the host network, and publish the subprocess runner's students there."""
    from conftest import GCS_BUCKET, start_gcs_emulator

    emulator = start_gcs_emulator()
    try:
        store_uri = f"gs://{GCS_BUCKET}/docker"
        env = {**_docker_env(docker_host, cpu_image), "STORAGE_EMULATOR_HOST": emulator.endpoint}
        proc = _cli("run", "synthetic", "--quick", "--runner", "docker", "--pipeline-root", str(tmp_path / "runs"),
                    "--artifact-store", store_uri, "--run-name", "gcs", cwd=tmp_path, env=env)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        rows = json.loads(emulator.store(store_uri).read_text("synthetic/gcs/report/students.json"))
    finally:
        emulator.close()
    assert {f"{row['method']}-seed{row['seed']}": row["test_accuracy"] for row in rows} == subprocess_students
    assert not (tmp_path / "runs" / "synthetic").exists()  # nothing published locally


@pytest.fixture
def mlflow_server(docker_host, mlflow_image):
    """The MLflow image serving on 127.0.0.1 (host network), its store inside the container; its URL."""
    port = free_port()
    name = f"ptdistill-test-mlflow-{port}"
    docker_host.docker("run", "-d", "--rm", "--network", "host", "--name", name, mlflow_image, "server",
                       "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                       "--backend-store-uri", "sqlite:////home/mlflow/mlflow.db")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    logs = docker_host.docker("logs", name, check=False).stderr[-2000:]
                    pytest.fail(f"MLflow image did not serve {url}/health within 120 s: {logs}", pytrace=False)
                time.sleep(1)
        yield url
    finally:
        docker_host.docker("rm", "-f", name, check=False)


@pytest.mark.images
def test_docker_runner_tracks_to_the_mlflow_image_over_http(docker_host, cpu_image, mlflow_server, subprocess_students,
                                                           tmp_path):
    """Tasks in containers reach an MLflow server on the host's 127.0.0.1: the parent and both students land
    there, FINISHED, with the accuracies of the run's report."""
    from mlflow import MlflowClient

    from ptdistill.tracking import PARENT_TAG

    root = tmp_path / "runs"
    proc = _cli("run", "synthetic", "--quick", "--runner", "docker", "--pipeline-root", str(root), "--run-name", "http",
                "--tracking-uri", mlflow_server, cwd=tmp_path, env=_docker_env(docker_host, cpu_image))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ptdistill-synthetic")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [run for run in runs if run.info.run_name == "http"]
    children = {run.info.run_name: run for run in runs if run.data.tags.get(PARENT_TAG) == parent.info.run_id}
    assert parent.info.status == "FINISHED"
    assert {name: run.data.metrics["test_accuracy"] for name, run in children.items()} == _students(root, "http")
    assert _students(root, "http") == subprocess_students
    assert {run.info.status for run in children.values()} == {"FINISHED"}
    assert not (root / "mlflow.db").exists()  # nothing tracked beside the server


@pytest.mark.images
def test_a_signal_ends_the_runs_containers(docker_host, cpu_image, tmp_path):
    """SIGTERM while the teacher trains in its container: exit 143, no container of the run left running
    (unstopped, it would run on for a minute), the parent FAILED."""
    from ptdistill.tracking import Tracker

    root = tmp_path / "runs"
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **_docker_env(docker_host, cpu_image)}
    proc = subprocess.Popen([sys.executable, "-m", "ptdistill", "run", "synthetic", "--quick", "--runner", "docker",
                             "--pipeline-root", str(root), "--run-name", "stop"], cwd=tmp_path, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not _run_containers(docker_host, "stop", running=True, task="train_teacher"):
            assert proc.poll() is None and time.monotonic() < deadline, "no train-teacher container started"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert "interrupted by SIGTERM; clean-up: MLflow parent marked FAILED" in stderr
    assert _run_containers(docker_host, "stop", running=True) == []
    tracker = Tracker(f"sqlite:///{root}/mlflow.db")
    [parent] = tracker.client.search_runs([tracker.experiment_id("synthetic")], "attributes.run_name = 'stop'")
    assert parent.info.status == "FAILED"
