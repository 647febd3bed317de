"""What the steps share: the run-info record that travels between them and publishing to the store."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ptdistill.storage import open_store

log = logging.getLogger("ptdistill.steps")

#: Environment variable: torch threads for steps that run alone (set by the local runner, which
#: gives each fanned-out student one thread through OMP_NUM_THREADS=1).
SOLO_THREADS = "PTDISTILL_SOLO_THREADS"
#: Folder of a run's resume checkpoints, under its prefix: kept when a run fails, so a re-run
#: with the same run name resumes; each step deletes its own when it succeeds.
CHECKPOINTS = "checkpoints"


def solo_threads() -> None:
    """Let a step that runs alone (teacher training and inference) use the threads the runner allows."""
    threads = os.environ.get(SOLO_THREADS)
    if threads:
        torch.set_num_threads(int(threads))


@dataclass
class RunInfo:
    """Facts about one pipeline run that every later step needs (written by ``prepare_data``)."""

    benchmark: str
    run_name: str
    parent_run_id: str
    tracking_uri: str
    artifact_store: str
    fingerprint: str
    num_classes: int
    class_names: list[str]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> RunInfo:
        return cls(**json.loads(Path(path).read_text()))

    @property
    def prefix(self) -> str:
        """Where this run's outputs live in the artifact store."""
        return f"{self.benchmark}/{self.run_name}"


def new_run_name(benchmark: str) -> str:
    """A generated run name, ``<benchmark>-YYYYmmdd-HHMMSS-<8 hex digits>``.

    The run name is the run's prefix in the artifact store and its name in MLflow, so two runs
    must never share one: 32 random bits make two runs started in the same second collide once
    in 4 billion, and 100 such runs about once in a million (no store or server is asked, so it
    works offline and before either answers).
    Names sort by start time to the second; within one second their order is arbitrary.
    """
    return f"{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


#: Longest run name accepted: it names a folder of task logs and an MLflow run (file names stop at 255 bytes).
MAX_RUN_NAME = 100


def check_run_name(name: str) -> str:
    """Return ``name`` if it can name a run, else raise ``ValueError`` saying what is expected.

    The run name is a single segment of the artifact-store prefix ``<benchmark>/<run name>/``, a
    folder of task logs and an MLflow run name, so it may hold spaces, quotes and any printable
    character except ``/`` and ``\\``; it must not be ``.``/``..`` or start with ``.`` (a hidden
    folder), nor hold control characters (newlines would break log lines and one-line errors),
    and has at most MAX_RUN_NAME characters. A name like ``a/b`` would sit inside run ``a``'s
    prefix, and a failed run ``a`` would delete it.
    """
    problem = None
    if not name or not name.strip():
        problem = "it is empty"
    elif len(name) > MAX_RUN_NAME:
        problem = f"it has {len(name)} characters"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator"
    elif name.startswith("."):
        problem = "it starts with '.'"
    elif any(not ch.isprintable() for ch in name):
        problem = "it contains a control character"
    if problem:
        raise ValueError(f"--run-name {name!r}: {problem}; expected at most {MAX_RUN_NAME} printable characters, "
                         "no '/' or '\\', not starting with '.'")
    return name


def checkpoint_prefix(info: RunInfo, name: str) -> tuple[str, str]:
    """(store URI, key prefix) of a step's resume checkpoints: the same on a restart of the run."""
    return info.artifact_store, f"{info.prefix}/{CHECKPOINTS}/{name}"


def clear_checkpoints(info: RunInfo, name: str) -> None:
    """Delete a finished step's resume checkpoints from the artifact store."""
    store_uri, prefix = checkpoint_prefix(info, name)
    store = open_store(store_uri)
    for key in store.list(prefix + "/"):
        store.delete(key)


def publish(info: RunInfo, key: str, local: str | Path) -> str:
    """Copy a local file or directory to ``<store>/<benchmark>/<run>/<key>``; returns its URI."""
    store = open_store(info.artifact_store)
    local = Path(local)
    full = f"{info.prefix}/{key}"
    if local.is_dir():
        store.upload_dir(full, local)
    else:
        store.upload_file(full, local)
    log.info("published %s", store.uri(full))
    return store.uri(full)
