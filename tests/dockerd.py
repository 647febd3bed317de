"""A private Docker daemon and the project's images, for the ``images`` test tier.

Importable helper and pytest plugin (``pytest_plugins = ("dockerd",)`` in conftest.py):

* :func:`start_dockerd` starts Debian's ``dockerd`` as root on a private socket, without a
  bridge or iptables changes (the flags below), with its exec root, pidfile and socket in a
  fresh temporary folder and its data root in a folder that persists between runs on the same
  machine (``PTDISTILL_DOCKER_DATA_ROOT``, default ``/var/cache/ptdistill/docker``), so the
  Debian base image and BuildKit's layer cache survive for the next run.  An exclusive
  ``flock`` on ``<data-root>.lock``, inherited by the daemon, keeps a second daemon off the
  same data root.  :meth:`Dockerd.stop` ends it by its pid and unmounts the
  ``<exec-root>/netns/default`` mount it leaves behind.
* ``PTDISTILL_TEST_DOCKER_HOST=unix:///path/docker.sock`` makes the fixtures use that daemon,
  already running, instead (neither started nor stopped).
* Session fixtures ``docker_host``, ``cpu_image`` and ``mlflow_image`` build
  through ``images/build.sh --offline --load`` (cached) and yield the local image references.
  A daemon that cannot start or an image that cannot be built FAILS the test with the reason:
  this tier is never skipped.

Run as a script to keep a daemon for interactive use (the printed ``DOCKER_HOST`` line)::

    python tests/dockerd.py start      # prints DOCKER_HOST=unix://... and leaves it running
    python tests/dockerd.py stop /tmp/ptdistill-dockerd-XXXX
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_SH = ROOT / "images" / "build.sh"
DOCKERD = "/usr/sbin/dockerd"
DOCKER_CLI = "/usr/bin/docker"  # Debian's CLI: BuildKit built in (the static 28.x one lacks buildx)
DEFAULT_DATA_ROOT = "/var/cache/ptdistill/docker"
START_TIMEOUT_S = 60.0


class DockerdError(RuntimeError):
    """The daemon could not be started, reached or stopped; the message says why."""


@dataclass
class Dockerd:
    """A running daemon: ``host`` is the ``DOCKER_HOST`` value; ``pid`` None if not ours."""

    host: str
    pid: int | None = None
    folder: Path | None = None  # socket, pidfile, log and exec root (``exec/``) of our daemon

    def env(self) -> dict[str, str]:
        """os.environ with ``DOCKER_HOST`` pointing at this daemon and BuildKit on."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def docker(self, *args: str, check: bool = True, timeout: float | None = None,
               ) -> subprocess.CompletedProcess[str]:
        """Run ``/usr/bin/docker ARGS`` against this daemon; stdout/stderr captured as text."""
        proc = subprocess.run([DOCKER_CLI, *args], env=self.env(), capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise DockerdError(f"docker {' '.join(args)} exited {proc.returncode}: "
                               f"{proc.stderr.strip()[-2000:]}")
        return proc

    def stop(self) -> None:
        """End a daemon we started (SIGTERM by pid, SIGKILL after 30 s) and unmount its netns."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait_gone(self.pid, 30.0) or _kill(self.pid)
        if self.folder is not None:
            netns = self.folder / "exec" / "netns" / "default"
            if os.path.ismount(netns):
                subprocess.run(["umount", str(netns)], check=False)
            shutil.rmtree(self.folder, ignore_errors=True)
        self.pid = None


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return True
        except ChildProcessError:  # not our child (started by the script): poll its existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.2)
    return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pid, 10.0)


def data_root() -> Path:
    """The persistent data root: ``PTDISTILL_DOCKER_DATA_ROOT`` or ``/var/cache/ptdistill/docker``."""
    return Path(os.environ.get("PTDISTILL_DOCKER_DATA_ROOT") or DEFAULT_DATA_ROOT)


def start_dockerd(root: Path | None = None, timeout: float = START_TIMEOUT_S) -> Dockerd:
    """Start ``dockerd`` on a private socket and wait until it answers ``docker version``.

    Raises DockerdError (not root, dockerd missing, data root held by another daemon, or the
    daemon exited / did not answer within ``timeout`` seconds, with the tail of its log).
    """
    if os.geteuid() != 0:
        raise DockerdError("dockerd needs root; run as root or set PTDISTILL_TEST_DOCKER_HOST "
                           "to a running daemon's socket")
    for tool in (DOCKERD, DOCKER_CLI):
        if not os.access(tool, os.X_OK):
            raise DockerdError(f"{tool} not found: apt-get install -y docker.io")
    root = root or data_root()
    root.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(f"{root}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = Path(f"{root}.lock").read_text().strip() or "?"
        os.close(lock_fd)
        raise DockerdError(f"data root {root} is in use by another dockerd ({holder}); set "
                           "PTDISTILL_TEST_DOCKER_HOST to its socket or PTDISTILL_DOCKER_DATA_ROOT "
                           "to another folder") from None
    folder = Path(tempfile.mkdtemp(prefix="ptdistill-dockerd-"))
    sock = folder / "docker.sock"
    log = open(folder / "dockerd.log", "wb")
    cmd = [DOCKERD, "--data-root", str(root), "--exec-root", str(folder / "exec"),
           "--pidfile", str(folder / "dockerd.pid"), "-H", f"unix://{sock}",
           "--iptables=false", "--ip-masq=false", "--ip-forward=false", "--bridge=none",
           "--storage-driver=overlay2"]
    # The daemon inherits the locked descriptor: the lock lasts exactly as long as it runs.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            pass_fds=(lock_fd,), start_new_session=True)
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, f"pid {proc.pid}, DOCKER_HOST=unix://{sock}\n".encode())
    os.close(lock_fd)
    log.close()
    daemon = Dockerd(host=f"unix://{sock}", pid=proc.pid, folder=folder)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (folder / "dockerd.log").read_text(errors="replace")[-1500:]
            shutil.rmtree(folder, ignore_errors=True)
            raise DockerdError(f"dockerd exited with {proc.returncode}: {tail}")
        if sock.exists() and daemon.docker("version", check=False, timeout=10).returncode == 0:
            return daemon
        time.sleep(0.3)
    tail = (folder / "dockerd.log").read_text(errors="replace")[-1500:]
    daemon.stop()
    raise DockerdError(f"dockerd did not answer on {sock} within {timeout:.0f}s: {tail}")


def connect(host: str) -> Dockerd:
    """A daemon someone else runs (``PTDISTILL_TEST_DOCKER_HOST``); DockerdError if it is down."""
    daemon = Dockerd(host=host)
    proc = daemon.docker("version", check=False, timeout=20)
    if proc.returncode != 0:
        raise DockerdError(f"PTDISTILL_TEST_DOCKER_HOST={host} does not answer: "
                           f"{proc.stderr.strip()[-500:]}")
    return daemon


def torch_wheel_dir() -> Path:
    """The local folder holding the torch wheel for offline builds.

    ``PTDISTILL_TORCH_WHEELS``, else the ``find-links`` folder of the host's pip configuration
    (where this machine's pip takes ``torch==2.13.0`` from).  Raises DockerdError if neither
    names an existing folder.
    """
    if os.environ.get("PTDISTILL_TORCH_WHEELS"):
        path = Path(os.environ["PTDISTILL_TORCH_WHEELS"])
    else:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                              capture_output=True, text=True)
        path = Path(proc.stdout.split()[0]) if proc.returncode == 0 and proc.stdout.strip() \
            else Path("/nonexistent")
    if not path.is_dir() or not list(path.glob("torch-*.whl")):
        raise DockerdError(f"no torch wheel folder for the offline build ({path}): set "
                           "PTDISTILL_TORCH_WHEELS to a folder holding the torch wheel")
    return path


def build_image(daemon: Dockerd, target: str) -> str:
    """``images/build.sh --offline --load TARGET`` against ``daemon``; the local image ref.

    The script prints ``export PTDISTILL_<TARGET>_IMAGE=<ref>``; DockerdError with the tail of
    the build log if it fails.
    """
    env = {**daemon.env(), "TORCH_WHEELS": str(torch_wheel_dir()), "DOCKER": DOCKER_CLI}
    proc = subprocess.run(["bash", str(BUILD_SH), "--offline", "--load", target], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    key = f"export PTDISTILL_{target.upper()}_IMAGE="
    refs = [line.split("=", 1)[1] for line in proc.stdout.splitlines() if line.startswith(key)]
    if proc.returncode != 0 or not refs:
        raise DockerdError(f"images/build.sh --offline --load {target} exited {proc.returncode}: "
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    return refs[-1]


# --------------------------------------------------------------------------- pytest fixtures

@pytest.fixture(scope="session")
def docker_host() -> Iterator[Dockerd]:
    """The tier's daemon: PTDISTILL_TEST_DOCKER_HOST's, or one started (and stopped) here."""
    try:
        external = os.environ.get("PTDISTILL_TEST_DOCKER_HOST")
        daemon = connect(external) if external else start_dockerd()
    except DockerdError as e:
        pytest.fail(f"images tier: {e}", pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()


def _built(daemon: Dockerd, target: str) -> str:
    try:
        return build_image(daemon, target)
    except DockerdError as e:
        pytest.fail(f"images tier: {e}", pytrace=False)


@pytest.fixture(scope="session")
def cpu_image(docker_host: Dockerd) -> str:
    """Local reference of the CPU image built from this work tree (offline path, cached)."""
    return _built(docker_host, "cpu")


@pytest.fixture(scope="session")
def mlflow_image(docker_host: Dockerd) -> str:
    """Local reference of the MLflow server image built from this work tree (offline, cached)."""
    return _built(docker_host, "mlflow")


def main(argv: list[str]) -> int:
    """``start``: start a daemon and leave it running; ``stop DIR``: stop the one in DIR."""
    if argv[:1] == ["start"]:
        daemon = start_dockerd()
        print(f"DOCKER_HOST={daemon.host}")
        print(f"# stop it with: python {Path(__file__).name} stop {daemon.folder}")
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        folder = Path(argv[1])
        pid = int((folder / "dockerd.pid").read_text())
        Dockerd(host=f"unix://{folder}/docker.sock", pid=pid, folder=folder).stop()
        return 0
    print(__doc__.split("Run as a script")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
