"""Checkpoints of a training run in the artifact store, and what identifies a run.

Each checkpoint is one ``torch.save``'d :class:`~ptdistill.engine.state.LoopState` blob (weights,
optimiser, scheduler, grad scaler, RNG states, position, history, best weights, early-stopping
counter, the partial loss window), written through :mod:`ptdistill.storage`, so a run resumes
from a local folder or a bucket alike. A checkpoint belongs to one run, identified by
:func:`run_identity` (config, data, targets, loss, the model's architecture and initial weights);
a checkpoint of another run under the same prefix raises ``ValueError`` naming what differs, or,
with ``Checkpointer(..., on_mismatch="restart")``, is logged, deleted and ignored.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
from collections.abc import Callable, Collection
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from ptdistill.storage import open_store

__all__ = ["CHECKPOINT_FORMAT", "Checkpointer", "rng_state", "run_identity", "set_rng_state"]

logger = logging.getLogger(__name__)

#: Version of the checkpoint blob layout; a blob of another version is not resumed.
#: 2: one LoopState for every family (1 was the text family's own layout).
CHECKPOINT_FORMAT = 2

_POINTER = "latest.json"
_BLOB_PREFIX, _BLOB_SUFFIX = "ckpt-", ".pt"


class Checkpointer:
    """Checkpoints of one training run under ``prefix/`` in the artifact store at ``store_uri``.

    Each checkpoint is one blob ``prefix/ckpt-e<epoch>-b<batch>-s<step>.pt`` written atomically,
    then the pointer ``prefix/latest.json`` is moved to it, then older blobs are deleted: a crash
    at any moment leaves a readable latest checkpoint. ``on_mismatch`` says what a run does with
    a checkpoint of a different run: ``"error"`` (``ValueError``) or ``"restart"`` (log, delete,
    start afresh). Call :meth:`clear` after a successful run.
    """

    def __init__(self, store_uri: str, prefix: str, *, on_mismatch: str = "error") -> None:
        if not isinstance(prefix, str) or not prefix.strip("/"):
            raise ValueError(f"prefix: expected a non-empty key prefix such as 'runs/abc/checkpoints', got {prefix!r}")
        if on_mismatch not in ("error", "restart"):
            raise ValueError(f"on_mismatch: expected 'error' or 'restart', got {on_mismatch!r}")
        self.store = open_store(store_uri)
        self.prefix = prefix.strip("/")
        self.on_mismatch = on_mismatch
        self.store.exists(self._key(_POINTER))  # validates the prefix as a key

    def __repr__(self) -> str:
        return f"Checkpointer({self.store.root_uri!r}, {self.prefix!r})"

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def keys(self) -> list[str]:
        """Keys of this checkpointer's objects (pointer and blobs), sorted."""
        return [k for k in self.store.list(self.prefix + "/") if self._is_own(k)]

    def _is_own(self, key: str) -> bool:
        name = key[len(self.prefix) + 1 :]
        return "/" not in name and (
            name == _POINTER or (name.startswith(_BLOB_PREFIX) and name.endswith(_BLOB_SUFFIX))
        )

    def latest(self) -> dict | None:
        """The pointer to the latest checkpoint (``key``, ``run``, ``identity``, position), or None."""
        try:
            return json.loads(self.store.read_text(self._key(_POINTER)))
        except FileNotFoundError:
            return None

    def clear(self) -> None:
        """Delete the pointer and every checkpoint blob (pointer first, so no reader follows it to nothing)."""
        keys = self.keys()
        pointer = self._key(_POINTER)
        for key in sorted(keys, key=lambda k: k != pointer):
            try:
                self.store.delete(key)
            except FileNotFoundError:
                pass

    def save(self, state: dict, *, run: str, identity: dict, position: dict) -> str:
        """Write ``state`` as a new checkpoint of run ``run``, move the pointer, drop older blobs; return its key."""
        name = (
            f"{_BLOB_PREFIX}e{position['epoch']:04d}-b{position['batches_done']:07d}"
            f"-s{position['step']:09d}{_BLOB_SUFFIX}"
        )
        buffer = io.BytesIO()
        torch.save(state, buffer)
        key = self._key(name)
        self.store.write_bytes(key, buffer.getvalue())
        pointer = {"format": CHECKPOINT_FORMAT, "key": name, "run": run, **position, "identity": identity}
        self.store.write_text(self._key(_POINTER), json.dumps(pointer, indent=1, sort_keys=True))
        for old in self.keys():
            if old not in (key, self._key(_POINTER)):
                try:
                    self.store.delete(old)
                except FileNotFoundError:
                    pass
        return key

    def find(self, run: str, identity: dict) -> dict | None:
        """The pointer of the latest checkpoint if it belongs to run ``run``; None if there is none.

        A checkpoint of another run (``identity`` says what differs) raises ``ValueError``, or with
        ``on_mismatch="restart"`` is logged, deleted, and None is returned.
        """
        pointer = self.latest()
        if pointer is None or (pointer.get("format") == CHECKPOINT_FORMAT and pointer.get("run") == run):
            return pointer
        if pointer.get("format") != CHECKPOINT_FORMAT:
            what = f"checkpoint format {pointer.get('format')!r}, this code writes {CHECKPOINT_FORMAT}"
        else:
            what = "it differs in " + ", ".join(_differences(pointer.get("identity") or {}, identity))
        message = f"{self.store.uri(self._key(_POINTER))} is a checkpoint of a different run: {what}"
        if self.on_mismatch == "error":
            raise ValueError(
                f"{message}; use another checkpoint prefix, clear() it, or Checkpointer(..., on_mismatch='restart')"
            )
        logger.warning("%s; deleting it and starting afresh", message)
        self.clear()
        return None

    def load(self, run: str, identity: dict) -> dict | None:
        """The state saved by the latest checkpoint of run ``run`` (see :meth:`find`), or None."""
        pointer = self.find(run, identity)
        if pointer is None:
            return None
        try:
            blob = self.store.read_bytes(self._key(pointer["key"]))
        except FileNotFoundError:
            logger.warning("checkpoint %s named by %s is missing; starting afresh", pointer["key"], _POINTER)
            return None
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def _differences(saved: dict, current: dict) -> list[str]:
    names = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            names += [f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                      if old.get(k) != new.get(k)]
        elif old != new:
            names.append(key)
    return names or ["its run hash"]


def _sha256(*arrays: np.ndarray | bytes) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array if isinstance(array, bytes) else np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _tensor_sample(tensor: torch.Tensor, size: int = 4096) -> bytes:
    flat = tensor.detach().reshape(-1)
    stride = max(1, flat.numel() // size)
    return f"{tuple(tensor.shape)}{tensor.dtype};".encode() + flat[::stride].float().cpu().numpy().tobytes()


def _model_identity(model: nn.Module) -> str:
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + _tensor_sample(tensor))
    return digest.hexdigest()


def _loss_identity(loss: Callable | None) -> str | None:
    if loss is None:
        return None
    if isinstance(loss, nn.Module):
        digest = hashlib.sha256(repr(loss).encode())
        for name, tensor in loss.state_dict().items():
            digest.update(name.encode() + _tensor_sample(tensor, size=1 << 20))
        return digest.hexdigest()
    return f"{getattr(loss, '__module__', '?')}.{getattr(loss, '__qualname__', type(loss).__qualname__)}"


def run_identity(config: object, *, ignore: Collection[str], data: dict, targets: np.ndarray | None,
                 loss: Callable | None, model: nn.Module) -> dict:
    """What makes two runs the same run (JSON-ready): differing in any of it, a checkpoint is not resumed.

    ``config`` is a dataclass less the fields in ``ignore`` (those that do not change what a run
    computes, e.g. the device); ``data`` names the family's fingerprints of its splits.
    """
    return {
        "config": {k: v for k, v in asdict(config).items() if k not in ignore},
        **data,
        "targets": None if targets is None else _sha256(str(targets.shape).encode(), targets),
        "loss": _loss_identity(loss),
        "model": _model_identity(model),
    }


def rng_state() -> dict:
    """The global RNG states: torch CPU and CUDA, Python, NumPy (JSON-free, ``weights_only``-loadable)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved; a CUDA state of another device count is skipped with a warning."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if torch.cuda.is_available():
        if cuda is not None and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("checkpoint has no CUDA RNG state for %d device(s); CUDA RNG not restored",
                           torch.cuda.device_count())
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


