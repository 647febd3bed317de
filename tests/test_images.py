"""The ``images`` tier: the project's images built for real (offline path) and exercised.

Each test runs against the tier's own dockerd (tests/dockerd.py), so this module runs alone
(``pytest -m images``) or next to ``pytest -m "not images"`` in another process: it uses no
fixed port and no folder the rest of the suite uses.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port
from dockerd import Dockerd, DockerdError, start_dockerd

pytestmark = pytest.mark.images

ROOT = Path(__file__).resolve().parent.parent
(TORCH_VERSION,) = re.findall(r"ARG TORCH_VERSION=(\S+)", (ROOT / "images/Dockerfile.cpu").read_text())


def test_cpu_image_imports_the_project_as_uid_1000_with_the_pinned_cpu_torch(docker_host: Dockerd,
                                                                           cpu_image: str):
    code = ("import json, os, ptdistill, components, pipelines, kfp, mlflow, torch; "
            "print(json.dumps([os.getuid(), os.getgid(), torch.__version__, torch.version.cuda, "
            "ptdistill.__file__]))")
    proc = docker_host.docker("run", "--rm", "--network", "none", cpu_image, "python", "-c", code,
                              timeout=300)
    uid, gid, version, cuda, where = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "not a writable directory" not in proc.stderr, proc.stderr  # MPLCONFIGDIR is usable
    assert (uid, gid) == (1000, 1000)
    assert version == f"{TORCH_VERSION}+cpu" and cuda is None
    assert where.startswith("/opt/venv/"), where  # the installed package, not a mounted tree
    user = docker_host.docker("image", "inspect", "-f", "{{.Config.User}}", cpu_image).stdout
    assert user.strip() == "1000:1000"


def test_private_dockerd_starts_refuses_a_second_on_its_data_root_and_stops_clean(tmp_path):
    root = tmp_path / "data-root"
    daemon = start_dockerd(root)
    try:
        info = daemon.docker("info", "--format", "{{.DockerRootDir}} {{.Driver}}").stdout.split()
        assert info == [str(root), "overlay2"]
        with pytest.raises(DockerdError, match=f"data root {root} is in use by another dockerd"):
            start_dockerd(root)
    finally:
        folder, pid = daemon.folder, daemon.pid
        daemon.stop()
    assert not Path(f"/proc/{pid}").exists()
    assert not folder.exists()  # socket, pidfile, exec root gone; netns unmounted first
    assert str(folder) not in Path("/proc/self/mounts").read_text()
    start_dockerd(root).stop()  # the lock went with the daemon


def _wait_healthy(docker_host: Dockerd, container: str, url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200 and resp.read().strip() == b"OK":
                    return
        except OSError:
            pass
        state = docker_host.docker("inspect", "-f", "{{.State.Running}}", container, check=False)
        if state.stdout.strip() != "true":
            logs = docker_host.docker("logs", container, check=False)
            pytest.fail(f"mlflow server exited: {(logs.stdout + logs.stderr)[-2000:]}")
        time.sleep(1)
    logs = docker_host.docker("logs", container, check=False)
    pytest.fail(f"{url} not OK within {timeout:.0f}s: {(logs.stdout + logs.stderr)[-2000:]}")


def test_mlflow_image_serves_health_and_accepts_a_run_over_http(docker_host: Dockerd,
                                                                mlflow_image: str, tmp_path):
    from mlflow import MlflowClient

    port = free_port()
    name = f"ptdistill-test-mlflow-{port}"
    docker_host.docker("run", "-d", "--rm", "--name", name, "--network", "host", mlflow_image,
                       "server", "--host", "127.0.0.1", "--port", str(port),
                       "--backend-store-uri", "sqlite:////home/mlflow/mlflow.db",
                       "--artifacts-destination", "/home/mlflow/artifacts", timeout=60)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(docker_host, name, f"{base}/health")
        client = MlflowClient(tracking_uri=base)
        experiment = client.create_experiment("images-tier")
        run = client.create_run(experiment, run_name="over-http")
        client.log_param(run.info.run_id, "loss", "ptloss")
        for step, value in enumerate((0.5, 0.75)):
            client.log_metric(run.info.run_id, "accuracy", value, step=step)
        client.log_text(run.info.run_id, "student accuracy 0.75\n", "report/summary.txt")
        client.set_terminated(run.info.run_id)

        fresh = MlflowClient(tracking_uri=base)  # read back through a new client
        got = fresh.get_run(run.info.run_id)
        assert got.info.status == "FINISHED" and got.info.experiment_id == experiment
        assert got.data.params == {"loss": "ptloss"}
        assert got.data.metrics == {"accuracy": 0.75}
        history = fresh.get_metric_history(run.info.run_id, "accuracy")
        assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.75)]
        local = fresh.download_artifacts(run.info.run_id, "report/summary.txt", str(tmp_path))
        assert Path(local).read_text() == "student accuracy 0.75\n"
        assert got.info.artifact_uri.startswith("mlflow-artifacts:/")  # served by the image
    finally:
        docker_host.docker("rm", "-f", name, check=False, timeout=60)
