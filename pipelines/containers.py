"""``ptdistill run --runner docker``: pre-flight checks, and the kfp.local DockerRunner the tasks run in.

kfp.local's DockerRunner starts each task as ``docker run`` of the image the compiled pipeline
names (the one a cluster starts), with only the pipeline root bind-mounted, at the same path,
and pulls an image that is missing locally. So, before any work, :func:`docker_preflight`
checks, each failing with one line (:class:`DockerCheckError`, a ``ValueError``: exit 2):

* the daemon answers (``DOCKER_HOST`` or the default socket);
* every image the pipeline names is in the daemon (no pull: registries may be unreachable, and
  a 2 GB pull is not a pre-flight); the line names the components that need it and how to build it;
* the local paths the tasks use are under the pipeline root, the only folder they see: a
  ``sqlite:///`` tracking file, a local artifact store, and any existing local path in the config
  (``data.path`` and the like), which must also be absolute (a task's working directory is the image's);
* a run that uses ``gs://`` (its store, or a path in its config) has credentials the containers can
  use: ``STORAGE_EMULATOR_HOST`` or a ``GOOGLE_APPLICATION_CREDENTIALS`` key file (mounted
  read-only, readable by the image's user);
* the image's user may write into the pipeline root (:func:`claim_pipeline_root`).

Tasks run with host networking: ``--network host`` works on a daemon started with
``--bridge=none`` (where the default bridge network does not exist) and lets a task reach what
the runner reaches at ``127.0.0.1`` (an MLflow server, a GCS emulator), which the host-side
pre-flight (:func:`ptdistill.preflight.preflight`) has already checked. It also gives tasks the
runner's host name, which the MLflow parent's host tag (stale-run detection) relies on. (On a
daemon whose host network is a VM's, as with Docker Desktop, ``127.0.0.1`` is the VM's.)
"""

from __future__ import annotations

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it

import os
import socket
import stat
import tarfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from kfp import local

from components.images import CPU_IMAGE, GPU_IMAGE
from ptdistill import defaults

#: Environment variables passed from the runner to every task container, by prefix or exact name:
#: MLflow's client settings and credentials, Google credentials, project and emulator, the
#: Hugging Face hub's settings, proxies, and ptdistill's own.
PASS_THROUGH_PREFIXES = ("MLFLOW_", "GOOGLE_", "CLOUDSDK_", "HF_", "PTDISTILL_")
PASS_THROUGH_NAMES = ("STORAGE_EMULATOR_HOST", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                      "http_proxy", "https_proxy", "no_proxy", "OMP_NUM_THREADS", "TQDM_MININTERVAL",
                      "PYTHONSAFEPATH", "TRANSFORMERS_OFFLINE")
#: Never passed: the image's own value (set when it was built) describes the code the task runs.
#: GOOGLE_APPLICATION_CREDENTIALS names a host file: passed only with its mount (see credentials_plan).
NOT_PASSED = ("PTDISTILL_GIT_COMMIT", "GOOGLE_APPLICATION_CREDENTIALS")
#: Label on every task container of a run: ``<host>:<runner pid>:<run name>``; how they are found to be ended.
RUN_LABEL = "io.ptdistill.run"
#: Seconds a stopped run waits for its killed task containers to go.
GRACE_SECONDS = 5.0
#: How the components' image kinds are built (images/build.sh) and overridden (components.images).
BUILD_KINDS = {"cpu": "PTDISTILL_CPU_IMAGE", "gpu": "PTDISTILL_GPU_IMAGE"}


class DockerCheckError(ValueError):
    """``--runner docker`` cannot start; the message is one line saying what and how to fix it.

    A ``ValueError``, so the command line reports it like other bad input: one line, exit 2.
    """


@dataclass
class DockerPlan:
    """What the pre-flight found: the image user and the task containers' extra settings."""

    uid: int
    gid: int
    environment: dict[str, str] = field(default_factory=dict)  # overrides of the pass-through environment
    mounts: list[Any] = field(default_factory=list)  # docker.types.Mount, read-only


def docker_host() -> str:
    """The daemon address the docker SDK uses: ``$DOCKER_HOST`` or the default socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout_s: int = 10):
    """A ``docker.DockerClient`` for :func:`docker_host` whose daemon answered a ping.

    Raises DockerCheckError naming the address when the SDK is missing or the daemon does not answer.
    """
    try:
        import docker  # docker extra: only --runner docker needs it
    except ImportError:
        raise DockerCheckError("--runner docker needs the docker Python SDK: pip install 'ptdistill[docker]'") from None
    host = docker_host()
    try:
        client = docker.from_env(timeout=timeout_s)
        client.ping()
    except docker.errors.DockerException as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise DockerCheckError(
            f"Docker daemon at {host} does not answer ({reason}): start one (`sudo systemctl start docker`, or "
            f"`sudo dockerd -H unix:///PATH/docker.sock &` and `export DOCKER_HOST=unix:///PATH/docker.sock`), "
            f"set DOCKER_HOST to a running daemon, or run with --runner subprocess") from None
    return client


def pipeline_images(pipeline) -> dict[str, list[str]]:
    """Image reference -> names of the components that run in it, from a built kfp pipeline's spec
    (``exec-train-teacher`` is component ``train-teacher``), names sorted."""
    executors = pipeline.pipeline_spec.deployment_spec["executors"]
    images: dict[str, list[str]] = {}
    for label, executor in executors.items():
        images.setdefault(executor["container"]["image"], []).append(label.removeprefix("exec-"))
    return {image: sorted(names) for image, names in images.items()}


def _with_tag(ref: str) -> str:
    """``ref`` with ``:latest`` when it names no tag or digest (what kfp.local runs)."""
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last or "@" in last else f"{ref}:latest"


def _repository(ref: str) -> str:
    """The last path segment of an image reference's repository: ``ptdistill-cpu`` of ``ghcr.io/x/ptdistill-cpu:1``."""
    name = ref.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[0]


def _how_to_get(ref: str, cpu_image: str, gpu_image: str, local_tags: list[str] = ()) -> str:
    """How to get ``ref`` into the daemon: the newest local tag of the same repository name (e.g. the one
    ``images/build.sh --load`` made), the build command, and the variable that points the run at a tag."""
    kinds = [kind for kind, image in (("cpu", cpu_image), ("gpu", gpu_image)) if _with_tag(image) == _with_tag(ref)]
    same = [tag for tag in local_tags if _repository(tag) == _repository(ref)]
    if not kinds:
        return f"the daemon has {same[0]}" if same else "build or load it into this daemon"
    variable = BUILD_KINDS[kinds[0]]
    how = [f"the daemon has {same[0]}: `export {variable}={same[0]}`, or" if same else "",
           f"build it with `images/build.sh --load {kinds[0]}` and export the {variable}=... line it prints,"
           f" or set {variable} to an image this daemon has"]
    if kinds == ["gpu"]:
        how.append(f"(on a machine without a GPU, the CPU image serves: PTDISTILL_GPU_IMAGE={cpu_image})")
    return " ".join(part for part in how if part)


def check_images(client, images: Mapping[str, list[str]]) -> dict[str, Any]:
    """Image reference -> its ``docker.models.images.Image``, every one present in the daemon.

    Raises DockerCheckError naming every missing one: which image, which components run in it,
    the build command or the environment variable that points at another tag.
    """
    import docker  # docker extra: only --runner docker needs it

    found, missing = {}, []
    for ref, components in images.items():
        try:
            found[ref] = client.images.get(_with_tag(ref))
        except docker.errors.ImageNotFound:
            newest_first = sorted(client.images.list(), key=lambda image: image.attrs.get("Created", ""), reverse=True)
            tags = [tag for image in newest_first for tag in image.tags]
            missing.append(f"{ref} (components {', '.join(components)}): {_how_to_get(ref, CPU_IMAGE, GPU_IMAGE, tags)}")
    if missing:
        raise DockerCheckError(f"not in the Docker daemon at {docker_host()}: image {'; image '.join(missing)}")
    return found


def image_user(image) -> tuple[int, int]:
    """(uid, gid) the image's processes run as, from its ``USER`` (``uid[:gid]`` or names looked up in
    the image's ``/etc/passwd`` / ``/etc/group``); (0, 0) when it sets none."""
    user = (image.attrs.get("Config") or {}).get("User") or ""
    name, _, group = user.partition(":")
    if not name:
        return 0, 0
    if name.isdigit() and (not group or group.isdigit()):
        uid = int(name)
        return uid, int(group) if group else uid
    passwd, groups = _image_file(image, "/etc/passwd"), _image_file(image, "/etc/group")
    entries = {fields[0]: fields for fields in (line.split(":") for line in passwd.splitlines()) if len(fields) > 3}
    if not name.isdigit() and name not in entries:
        raise DockerCheckError(f"image {image.tags[0] if image.tags else image.id}: USER {user!r} is not in its /etc/passwd")
    uid = int(name) if name.isdigit() else int(entries[name][2])
    by_uid = {int(f[2]): f for f in entries.values() if f[2].isdigit()}
    gid = int(by_uid[uid][3]) if uid in by_uid else uid
    if group:
        named = {f[0]: int(f[2]) for f in (line.split(":") for line in groups.splitlines()) if len(f) > 2}
        gid = int(group) if group.isdigit() else named.get(group, gid)
    return uid, gid


def _image_file(image, path: str) -> str:
    """A text file of the image's file system, read from a created (never started) container."""
    container = image.client.containers.create(image.id, command=["true"])
    try:
        chunks, _ = container.get_archive(path)
        with tarfile.open(fileobj=BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(tar.getmembers()[0])
            return member.read().decode() if member else ""
    finally:
        container.remove(force=True)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _sqlite_path(tracking_uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix):]) if tracking_uri.startswith(prefix) else None


#: Config keys (last segment) whose value may be a local file or folder: ``data.path``, ``data.source``,
#: ``teacher.model.name_or_path``, ``student.model.name_or_path``, ``teacher.outputs``.
PATH_KEYS = ("path", "source", "name_or_path", "outputs")


def _path_values(values: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, value) of every non-empty string under a :data:`PATH_KEYS` key of a config dict."""
    if isinstance(values, Mapping):
        for name, value in values.items():
            yield from _path_values(value, f"{key}.{name}" if key else str(name))
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            yield from _path_values(value, f"{key}[{i}]")
    elif isinstance(values, str) and values and key.rsplit(".", 1)[-1] in PATH_KEYS:
        yield key, values


def local_config_paths(config: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(dotted key, value) of every :data:`PATH_KEYS` value in a config dict that names an existing local path
    (a hub id or ``gs://`` URI does not; nor does ``kl`` under another key, whatever the working directory holds)."""
    return ((key, value) for key, value in _path_values(config) if "://" not in value and os.path.lexists(value))


def check_placement(pipeline_root: Path, artifact_store: str, tracking_uri: str, config: Mapping[str, Any]) -> None:
    """Raise DockerCheckError unless every local path the tasks use is under ``pipeline_root``.

    ``tracking_uri``: a ``sqlite:///`` file; ``artifact_store``: a folder or ``file://`` URI;
    ``config``: the run's config as a dict, each existing local path in it (absolute too).
    """
    root = pipeline_root.resolve()
    fix = f"(the only folder mounted into the task containers is the pipeline root {root})"
    db = _sqlite_path(tracking_uri)
    if db is not None and not _within(db.resolve(), root):
        raise DockerCheckError(
            f"tracking database {db} is outside the pipeline root {fix}: use --tracking-uri sqlite:///{root}/{defaults.TRACKING_DB} "
            f"(the --runner docker default when MLFLOW_TRACKING_URI is unset) or an http:// MLflow server")
    if "://" not in artifact_store or artifact_store.startswith("file://"):
        store = Path(artifact_store.removeprefix("file://")).resolve()
        if not _within(store, root):
            raise DockerCheckError(f"artifact store {artifact_store} is outside the pipeline root {fix}: omit "
                                   f"--artifact-store (it defaults to the pipeline root), give a folder under {root}, "
                                   "or a gs:// store")
    for key, value in local_config_paths(config):
        if not os.path.isabs(value):
            absolute = Path(value).resolve()
            how = (f"give it as {absolute}" if _within(absolute, root)
                   else f"copy it under the pipeline root {root} and give its absolute path")
            raise DockerCheckError(f"config {key}={value}: a relative path means another folder inside a task "
                                   f"container: {how}")
        if not _within(Path(value).resolve(), root):
            raise DockerCheckError(f"config {key}={value} is outside the pipeline root {fix}: copy it under {root} "
                                   "or use a gs:// URI")


def _may_read(path: Path, uid: int, gid: int) -> bool:
    st = path.stat()
    if uid == 0:
        return True
    bits = stat.S_IRUSR if st.st_uid == uid else stat.S_IRGRP if st.st_gid == gid else stat.S_IROTH
    return bool(st.st_mode & bits)


def task_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` a task container gets (see PASS_THROUGH_PREFIXES and _NAMES)."""
    return {k: v for k, v in environ.items()
            if (k.startswith(PASS_THROUGH_PREFIXES) or k in PASS_THROUGH_NAMES) and k not in NOT_PASSED}


def gcs_uris(artifact_store: str, config: Mapping[str, Any]) -> list[str]:
    """The ``gs://`` URIs a run uses: its artifact store, and :data:`PATH_KEYS` values of its config."""
    uris = [artifact_store] if artifact_store.startswith("gs://") else []
    return uris + [value for _, value in _path_values(config) if value.startswith("gs://")]


def credentials_plan(environ: Mapping[str, str], uris: list[str], uid: int, gid: int) -> DockerPlan:
    """The plan for image user ``uid``:``gid``; when the run uses ``gs://`` ``uris``, with the read-only
    mount of the ``GOOGLE_APPLICATION_CREDENTIALS`` key file at the same path (and that variable, made
    absolute; it is not passed otherwise, as a path the containers do not have).

    Raises DockerCheckError when the run uses ``gs://`` and has neither ``STORAGE_EMULATOR_HOST`` nor
    a key file (the containers cannot see gcloud's own credentials in the runner's home), or the key
    file is missing or cannot be read by the image's user.
    """
    from docker.types import Mount  # docker extra, as above

    plan = DockerPlan(uid=uid, gid=gid)
    key_file = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if not uris:
        return plan
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise DockerCheckError(f"GOOGLE_APPLICATION_CREDENTIALS={key_file}: no such file")
        if not _may_read(path, uid, gid):
            raise DockerCheckError(f"GOOGLE_APPLICATION_CREDENTIALS={key_file} cannot be read by uid {uid}, the task "
                                   f"images' user (it is mounted read-only into each task): `chmod o+r {key_file}` "
                                   f"or `chgrp {gid} {key_file} && chmod g+r {key_file}`")
        absolute = str(path.resolve())
        plan.environment["GOOGLE_APPLICATION_CREDENTIALS"] = absolute
        plan.mounts.append(Mount(target=absolute, source=absolute, type="bind", read_only=True))
    elif not environ.get("STORAGE_EMULATOR_HOST"):
        raise DockerCheckError(
            f"{uris[0]}: task containers see no Google credentials: set GOOGLE_APPLICATION_CREDENTIALS to a "
            "service-account key file (it is mounted read-only into each task), or STORAGE_EMULATOR_HOST for an emulator")
    return plan


def _writable_by(st: os.stat_result, uid: int, gid: int) -> bool:
    need = stat.S_IWUSR | (stat.S_IXUSR if stat.S_ISDIR(st.st_mode) else 0)
    if st.st_uid == uid:
        return st.st_mode & need == need
    shift = 3 if st.st_gid == gid else 6
    return st.st_mode & (need >> shift) == need >> shift


def not_writable(root: Path, uid: int, gid: int) -> Iterator[Path]:
    """Each folder or regular file at or under ``root`` that ``uid`` (primary group ``gid``) cannot
    write into (a folder needs write and search permission), by owner, group and other bits;
    symbolic links are neither followed nor listed."""
    for folder, dirs, files in os.walk(root):
        for path in (Path(folder), *(Path(folder) / name for name in files)):
            st = path.lstat()
            if (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)) and not _writable_by(st, uid, gid):
                yield path
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]


def claim_pipeline_root(root: Path, uid: int, gid: int) -> int:
    """Make ``root`` (created if missing) writable by the task containers' user ``uid``:``gid``.

    The tasks write into the pipeline root (kfp.local's task folders), the artifact store and a
    sqlite tracking file under it. When this process runs as root, each entry that user cannot
    write is given to it (``chown uid:gid``, plus owner write/search permission), as ``chown`` by
    hand would: the tasks then create files the runner (root) can still remove; returns how many.
    Otherwise nothing is changed, and the first entry the user cannot write raises
    DockerCheckError with the command that fixes it. A runner whose uid is not the image's is
    refused too: the tasks' files (uid ``uid``) could not be removed by its clean-up.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DockerCheckError(f"pipeline root {root} cannot be created: {err.strerror}") from None
    if os.geteuid() == 0:
        changed = 0
        for path in list(not_writable(root, uid, gid)):
            try:
                os.chown(path, uid, gid)
                os.chmod(path, path.stat().st_mode | stat.S_IWUSR | (stat.S_IXUSR if path.is_dir() else 0))
            except OSError as err:  # e.g. a root-squashing NFS mount
                raise DockerCheckError(f"{path} cannot be given to uid {uid}, the task images' user "
                                       f"({err.strerror}): choose a --pipeline-root on a local disk") from None
            changed += 1
        return changed
    if os.geteuid() != uid:
        raise DockerCheckError(
            f"the task images run as uid {uid} and you are uid {os.geteuid()}: their files in the pipeline root "
            f"{root} could not be removed by this run's clean-up: run as uid {uid} or as root, or use --runner subprocess")
    for path in not_writable(root, uid, gid):
        raise DockerCheckError(f"{path} is not writable by uid {uid}, the task images' user: "
                               f"`sudo chown -R {uid}:{gid} {root}`, or choose another --pipeline-root")
    return 0


def docker_preflight(pipeline, pipeline_root: Path, artifact_store: str, tracking_uri: str,
                     config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> DockerPlan:
    """Every check of the module docstring, in order, before anything is written; returns the plan
    for :func:`docker_runner`. Raises DockerCheckError (one line)."""
    check_placement(pipeline_root, artifact_store, tracking_uri, config)
    client = connect()
    try:
        images = check_images(client, pipeline_images(pipeline))
        users = {image_user(image) for image in images.values()}
    finally:
        client.close()
    if len(users) > 1:
        raise DockerCheckError(f"the pipeline's images run as different users {sorted(users)}: their files in one "
                               "pipeline root would not be writable by each other; build them with one USER")
    uid, gid = users.pop() if users else (0, 0)
    if os.geteuid() != 0:  # checks only (raises); as root the run gives the folders to uid:gid once its files exist
        claim_pipeline_root(pipeline_root, uid, gid)
    return credentials_plan(environ, gcs_uris(artifact_store, config), uid, gid)


def run_label(run_name: str) -> str:
    """The :data:`RUN_LABEL` value of this runner's task containers for ``run_name``."""
    return f"{socket.gethostname()}:{os.getpid()}:{run_name}"


def docker_runner(plan: DockerPlan, run_name: str, environ: Mapping[str, str]):
    """A ``kfp.local.DockerRunner`` for the run: host network, the run label, the pass-through environment of ``environ`` (read now: the runner's
    task environment) and the read-only mounts of the plan."""
    return local.DockerRunner(network_mode="host", labels={RUN_LABEL: run_label(run_name)},
                              environment={**task_environment(environ), **plan.environment}, mounts=list(plan.mounts))


def end_containers(run_name: str, wait_s: float = GRACE_SECONDS) -> int:
    """Kill this runner's task containers of ``run_name`` and wait up to ``wait_s`` seconds for them to go.

    SIGKILL at once: a task's PID 1 is kfp's ``sh -c``, which as PID 1 ignores SIGTERM, so SIGTERM
    would only add a grace period that ends in SIGKILL anyway (an init process would forward it,
    but Debian's docker-init, a symlink, fails to start: ``exec /sbin/docker-init: invalid argument``).
    Returns how many there were; a daemon that does not answer counts as none (its containers
    cannot be reached either).
    """
    import docker  # docker extra: only --runner docker needs it

    try:
        client = docker.from_env(timeout=10)
    except docker.errors.DockerException:
        return 0
    try:
        found = client.containers.list(filters={"label": f"{RUN_LABEL}={run_label(run_name)}"})
        for container in found:
            try:
                container.kill()
            except docker.errors.APIError:  # already gone (auto-removed) or no longer running
                pass
        deadline = time.monotonic() + wait_s
        alive = found
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [c for c in alive if _running(c)]
        return len(found)
    except docker.errors.DockerException:
        return 0
    finally:
        client.close()


def _running(container) -> bool:
    import docker  # docker extra: only --runner docker needs it

    try:
        container.reload()
    except docker.errors.NotFound:
        return False
    return container.status in ("running", "restarting", "created")
