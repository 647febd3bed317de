"""Fine-tuning and distillation of Hugging Face sequence classifiers, with checkpoints and resume.

One loop (:func:`fit_text`) serves the teacher (cross-entropy on ``train.labels``) and the
students (a registry loss on teacher probabilities; ``train.labels`` is never read), as
:mod:`ptdistill.families.mlp.training` does for the MLPs. AdamW (no weight decay on biases and LayerNorm
weights, i.e. on 1-d parameters), linear warm-up then linear decay, gradient accumulation,
clipping at 1.0, and mixed precision / multi-GPU through ``accelerate.Accelerator``.

Batches: the split is tokenised once (:func:`~ptdistill.families.text.batching.encode`); epoch ``e``
visits the examples in a permutation drawn from a generator seeded by ``(config.seed, e)``
alone, so any epoch's order is known without replaying the earlier ones, and each batch is
padded to its own longest example (:func:`~ptdistill.families.text.batching.collate`).
``config.batch_size`` is the batch of one forward pass on the whole machine: with several
processes each takes its share of every batch (accelerate's ``split_batches``), so the
optimisation is the same on 1 or N GPUs. An optimiser step averages ``grad_accumulation``
batches; the last, partial group of an epoch still steps.

Checkpoints (:class:`Checkpointer`): every ``checkpoint_every_steps`` optimiser steps and at
every epoch end, one ``torch.save``'d blob with everything the loop needs to continue exactly
where it was: weights, optimiser, scheduler, grad scaler, RNG states (torch CPU and CUDA,
Python, NumPy), position (epoch, batches done, global step), the History so far, the partial
loss window and the early-stopping state. On start :func:`fit_text` resumes from the latest
checkpoint, mid-epoch if that is where the run stopped, skipping the batches already done.
On CPU a resumed run ends with the same weights, bit for bit, as an uninterrupted one.
A checkpoint belongs to one run, identified by a hash of the config (without the settings
that do not change the result: device, eval_batch_size, checkpoint_every_steps,
gradient_checkpointing), the training split and its token ids, the targets, the loss and the
model's architecture and initial weights (a strided sample of each tensor). A checkpoint of
another run under the same prefix raises ``ValueError`` naming what differs, or, with
``Checkpointer(..., on_mismatch="restart")``, is logged, deleted and ignored.

Multi-process runs: the main process writes checkpoints; every process evaluates the full
validation split (so early stopping decides the same everywhere); a resumed multi-process run
restores the main process's RNG state in every process, so it continues correctly but not bit
for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ptdistill.checks import check_probs
from ptdistill.engine import History, progress_postfix, resolve_device, seed_everything
from ptdistill.families.text.batching import classification_logits, collate, encode
from ptdistill.families.text.split import TextSplit
from ptdistill.storage import content_key, open_store

__all__ = ["CHECKPOINT_FORMAT", "PRECISIONS", "Checkpointer", "TextTrainConfig", "fit_text"]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
#: Version of the checkpoint blob layout; a blob of another version is not resumed.
CHECKPOINT_FORMAT = 1
#: Gradient-norm clipping threshold (as in BERT fine-tuning recipes).
MAX_GRAD_NORM = 1.0
#: Config fields that do not change what a run computes, so a run resumes across changes to them.
_NOT_IN_RUN_ID = ("device", "eval_batch_size", "checkpoint_every_steps", "gradient_checkpointing")


def _int_at_least(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


@dataclass
class TextTrainConfig:
    """Fine-tuning settings; defaults follow BERT fine-tuning (the paper's lr grid is {2, 3, 5}e-5).

    ``batch_size`` examples per forward pass, ``grad_accumulation`` passes per optimiser step.
    ``warmup_ratio`` of all optimiser steps warm the learning rate up linearly, then it decays
    linearly to 0. ``patience`` (epochs without a gain in validation accuracy) turns on early
    stopping with the best weights restored at the end. ``checkpoint_every_steps`` optimiser
    steps between checkpoints (0: only at epoch ends). ``precision``: ``"auto"`` is bf16 on CUDA
    when supported, else fp16 on CUDA, and fp32 on CPU; ``"bf16"`` also works on CPU (autocast),
    ``"fp16"`` needs CUDA. ``gradient_checkpointing`` trades compute for memory on any device
    (the model must support it). ``device``: ``"auto"``, ``"cpu"`` or ``"cuda"`` (which GPUs:
    ``CUDA_VISIBLE_DEVICES`` / ``accelerate launch``). ``group_by_length`` draws each batch from
    examples of similar length (as Hugging Face's Trainer option of that name): within windows of
    50 batches of a random order, examples are sorted by length and cut into batches, whose order
    is shuffled again. Batches then pad to their own length, not to a random long example's: on
    review snippets (mean 27 tokens, longest 68) that is half the tokens of random batches.
    """

    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_accumulation: int = 1
    patience: int | None = None
    checkpoint_every_steps: int = 200
    precision: str = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"
    log_every_steps: int = 20
    eval_batch_size: int = 128
    group_by_length: bool = True

    def __post_init__(self) -> None:
        _int_at_least("epochs", self.epochs, 1)
        _int_at_least("batch_size", self.batch_size, 1)
        _int_at_least("grad_accumulation", self.grad_accumulation, 1)
        _int_at_least("checkpoint_every_steps", self.checkpoint_every_steps, 0)
        _int_at_least("seed", self.seed, 0)
        _int_at_least("log_every_steps", self.log_every_steps, 1)
        _int_at_least("eval_batch_size", self.eval_batch_size, 1)
        if self.patience is not None:
            _int_at_least("patience", self.patience, 1)
        if _real("lr", self.lr) <= 0:
            raise ValueError(f"lr: expected a learning rate > 0, got {self.lr!r}")
        if _real("weight_decay", self.weight_decay) < 0:
            raise ValueError(f"weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        if not 0 <= _real("warmup_ratio", self.warmup_ratio) < 1:
            raise ValueError(f"warmup_ratio: expected a fraction in [0, 1), got {self.warmup_ratio!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(f"gradient_checkpointing: expected True or False, got {self.gradient_checkpointing!r}")
        if self.device not in DEVICES:
            raise ValueError(
                f"device: expected one of {', '.join(DEVICES)}, got {self.device!r}"
                " (choose GPUs with CUDA_VISIBLE_DEVICES or accelerate launch)"
            )

    def batches_per_epoch(self, num_examples: int) -> int:
        """Forward passes per epoch (the last batch may be smaller)."""
        return math.ceil(num_examples / self.batch_size)

    def steps_per_epoch(self, num_examples: int) -> int:
        """Optimiser steps per epoch (the last accumulation group may be partial)."""
        return math.ceil(self.batches_per_epoch(num_examples) / self.grad_accumulation)

    def total_steps(self, num_examples: int) -> int:
        """Optimiser steps of a full run, e.g. for ``build_loss("annealing_kd", total_steps=...)``."""
        return self.epochs * self.steps_per_epoch(num_examples)

    def warmup_steps(self, num_examples: int) -> int:
        """Optimiser steps of linear warm-up."""
        return math.ceil(self.warmup_ratio * self.total_steps(num_examples))


# ----------------------------------------------------------------------------- checkpoints

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


def _run_identity(config: TextTrainConfig, train: TextSplit, sequences: list, targets: np.ndarray | None,
                  loss: Callable | None, validation: TextSplit | None, model: nn.Module) -> dict:
    """What makes two runs the same run (JSON-ready): differing in any of it, a checkpoint is not resumed."""
    tokens = hashlib.sha256()
    for example in sequences:
        for key in sorted(example):
            tokens.update(key.encode() + np.asarray(example[key], dtype=np.int64).tobytes() + b";")
    return {
        "config": {k: v for k, v in asdict(config).items() if k not in _NOT_IN_RUN_ID},
        "train": train.fingerprint(),
        "train_tokens": tokens.hexdigest(),
        "targets": None if targets is None else _sha256(str(targets.shape).encode(), targets),
        "loss": _loss_identity(loss),
        "validation": None if validation is None else validation.fingerprint(),
        "model": _model_identity(model),
    }


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
    }


def _set_rng_state(state: dict) -> None:
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


# ----------------------------------------------------------------------------- the loop


def _mixed_precision(config: TextTrainConfig, device: torch.device) -> str:
    """accelerate's mixed_precision for ``config.precision`` on ``device``."""
    if config.precision == "fp32":
        return "no"
    if config.precision == "fp16":
        if device.type != "cuda":
            raise ValueError(f"precision: 'fp16' needs CUDA (with a gradient scaler), the device is {device};"
                             " use 'auto', 'fp32' or 'bf16'")
        return "fp16"
    if config.precision == "bf16":
        return "bf16"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _accelerator(config: TextTrainConfig):
    from accelerate import Accelerator  # text extra: imported when used, so configs import without it
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DataLoaderConfiguration

    device = resolve_device(config.device)
    mixed_precision = _mixed_precision(config, device)
    # AcceleratorState and PartialState are process-wide singletons that refuse a second Accelerator
    # with another precision or device (e.g. a bf16 GPU run, then a CPU run, in one process): reset
    # them. The process group (PartialState) is only reset in a single-process run.
    partial = PartialState._shared_state
    if partial and partial.get("device") is not None and partial["device"].type != device.type:
        if partial.get("num_processes", 1) > 1:
            raise ValueError(f"device: this is a {partial['num_processes']}-process run on {partial['device'].type};"
                             f" it cannot switch to {device.type}")
        AcceleratorState._reset_state(reset_partial_state=True)
    elif AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state()
    return Accelerator(
        cpu=device.type == "cpu",
        mixed_precision=mixed_precision,
        dataloader_config=DataLoaderConfiguration(split_batches=True),  # scheduler: one step per optimiser step
    )


def _num_labels(model: nn.Module) -> int:
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if not isinstance(num_labels, int) or num_labels < 2:
        raise ValueError(
            f"model: expected a sequence-classification model whose config.num_labels >= 2, got {num_labels!r}"
        )
    return num_labels


def _check_split_labels(name: str, split: TextSplit, num_classes: int) -> None:
    if split.labels.max() >= num_classes:
        raise ValueError(f"{name}.labels: must lie in [0, {num_classes}) for a model with {num_classes} labels,"
                         f" got a label {int(split.labels.max())}")


def _check_targets(targets: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    probs = np.asarray(targets)
    if probs.shape != (n, num_classes):
        raise ValueError(f"targets: expected shape ({n}, {num_classes}) (train examples, model labels), got {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"targets: expected floating-point teacher probabilities, got dtype {probs.dtype}")
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    check_probs("targets", torch.from_numpy(probs))
    return probs


def _optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: biases and LayerNorm weights (1-d parameters) are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: has no trainable parameters")
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _enable_activation_checkpointing(model: nn.Module) -> bool:
    """Turn on activation (gradient) checkpointing; whether this call turned it on (False: it was on).

    Same code on every device. Non-reentrant checkpointing replays dropout with the stashed RNG
    state, so the result is the same as without it (bit for bit on CPU), with less memory.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"gradient_checkpointing: {type(model).__name__} does not support it")
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        if model.is_activation_checkpointing:
            return False
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        if model.is_gradient_checkpointing:
            return False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


def _disable_activation_checkpointing(model: nn.Module) -> None:
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def _restore_forward(model: nn.Module, own_forward: Callable | None) -> None:
    """Undo the autocast wrapper ``accelerator.prepare`` puts on ``model.forward`` under mixed precision.

    Not ``accelerator.unwrap_model(model, keep_fp32_wrapper=False)``: it follows ``__wrapped__``
    past the model's own decorators (transformers decorates ``forward``), stripping them too.
    """
    if model.__dict__.pop("_original_forward", None) is None:
        return
    if own_forward is None:
        model.__dict__.pop("forward", None)  # back to the class's forward
    else:
        model.forward = own_forward


#: ``group_by_length`` sorts by length within windows of this many batches.
LENGTH_WINDOW_BATCHES = 50


def _generator(*entropy: int) -> torch.Generator:
    seed = int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


def _epoch_batches(seed: int, epoch: int, lengths: torch.Tensor, batch_size: int,
                   group_by_length: bool) -> list[torch.Tensor]:
    """The batches (row indices) of epoch ``epoch`` (0-based): a function of (seed, epoch) only, so a
    resumed run redraws them without replaying earlier epochs. ``ceil(n / batch_size)`` batches."""
    n = len(lengths)
    order = torch.randperm(n, generator=_generator(seed, epoch))
    if not group_by_length:
        return [order[lo : lo + batch_size] for lo in range(0, n, batch_size)]
    window = LENGTH_WINDOW_BATCHES * batch_size
    batches = []
    for lo in range(0, n, window):
        rows = order[lo : lo + window]
        rows = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
        batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    shuffle = torch.randperm(len(batches), generator=_generator(seed, epoch, 1))
    return [batches[i] for i in shuffle]


def fit_text(
    model: nn.Module,
    tokenizer,
    train: TextSplit,
    config: TextTrainConfig,
    *,
    targets: np.ndarray | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    validation: TextSplit | None = None,
    checkpoints: Checkpointer | None = None,
    max_length: int = 128,
    progress: bool = False,
) -> History:
    """Fine-tune ``model`` (a Hugging Face sequence classifier) in place; return its :class:`History`.

    ``targets=None``: cross-entropy on ``train.labels`` (the teacher). Otherwise ``targets`` are
    teacher probabilities (n, C) for ``train`` and the objective is ``loss(logits, targets)``
    (a registry loss; ``loss.set_step(global_step)`` is called before each optimiser step when
    it exists); ``train.labels`` is never read. ``validation`` (labeled) is evaluated after
    every epoch (accuracy and NLL); with ``config.patience`` it drives early stopping and the
    best weights are restored. Inputs are truncated to ``max_length`` tokens (the model spec's,
    so training and inference see the same text). With ``checkpoints`` the run saves checkpoints and resumes
    from the latest one (see :class:`Checkpointer`); clear them after a successful run. A resumed
    run's ``History.seconds`` and ``examples_per_second`` include the earlier sessions up to
    their last checkpoint. Dropout is seeded from ``config.seed`` (with Python's and NumPy's RNGs);
    the initial weights are the caller's.
    """
    if not isinstance(train, TextSplit):
        raise ValueError(f"train: expected a TextSplit, got {type(train).__name__}")
    if not isinstance(config, TextTrainConfig):
        raise ValueError(f"config: expected a TextTrainConfig, got {type(config).__name__}")
    if checkpoints is not None and not isinstance(checkpoints, Checkpointer):
        raise ValueError(f"checkpoints: expected a Checkpointer or None, got {type(checkpoints).__name__}")
    num_classes = _num_labels(model)
    if validation is not None:
        if not isinstance(validation, TextSplit):
            raise ValueError(f"validation: expected a TextSplit, got {type(validation).__name__}")
        if validation.labels is None:
            raise ValueError("validation: has no labels; validation metrics and early stopping need a labeled split")
        _check_split_labels("validation", validation, num_classes)
    if config.patience is not None and validation is None:
        raise ValueError(f"validation: config.patience={config.patience} (early stopping) needs a validation split")
    if targets is None:
        if loss is not None:
            raise ValueError("loss: is only used with targets (teacher probabilities); without targets the model"
                             " is trained on train.labels with cross-entropy")
        if train.labels is None:
            raise ValueError("train: has no labels (a distillation split?); pass targets= (teacher probabilities)"
                             " and loss= to distill on it")
        _check_split_labels("train", train, num_classes)
        probs = None
        target_tensor = torch.tensor(train.labels)  # a copy: arrays read from parquet are read-only

        def objective(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits.float(), y)
    else:
        if loss is None or not callable(loss):
            raise ValueError(f"loss: expected a loss such as build_loss('kl') to distill on targets, got {loss!r}")
        probs = _check_targets(targets, len(train), num_classes)
        target_tensor = torch.from_numpy(probs)
        objective = loss

    sequences = encode(tokenizer, train, max_length)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token first")
    identity = run = None
    if checkpoints is not None:
        identity = _run_identity(config, train, sequences, probs, loss, validation, model)
        run = content_key(identity)
        checkpoints.find(run, identity)  # a checkpoint of another run is refused before the model is touched

    accelerator = _accelerator(config)
    own_forward = model.__dict__.get("forward")  # an instance-level forward the caller set, if any
    enabled_checkpointing = config.gradient_checkpointing and _enable_activation_checkpointing(model)
    try:
        return _train(model, tokenizer, sequences, target_tensor, objective, getattr(loss, "set_step", None),
                      validation, config, accelerator, checkpoints, run, identity, max_length, progress,
                      desc="teacher" if probs is None else "student")
    finally:
        if enabled_checkpointing:
            _disable_activation_checkpointing(model)
        _restore_forward(model, own_forward)
        accelerator.free_memory()


def _train(model: nn.Module, tokenizer, sequences: list, target_tensor: torch.Tensor, objective: Callable,
           set_step: Callable[[int], None] | None, validation: TextSplit | None, config: TextTrainConfig,
           accelerator, checkpoints: Checkpointer | None, run: str | None, identity: dict | None,
           max_length: int, progress: bool, desc: str) -> History:
    """The loop of :func:`fit_text`, its arguments checked."""
    device = accelerator.device
    n = len(sequences)
    lengths = torch.tensor([len(s["input_ids"]) for s in sequences])
    num_batches = config.batches_per_epoch(n)
    total_steps = config.total_steps(n)
    optimizer = torch.optim.AdamW(_optimizer_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _linear_schedule(config.warmup_steps(n), total_steps)
    )
    prepared, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if isinstance(objective, nn.Module):
        objective.to(device)
    seed_everything(config.seed)  # dropout

    history = History()
    start_epoch, start_batch, step = 0, 0, 0
    best_state: dict[str, torch.Tensor] | None = None
    epochs_without_gain = 0
    window_sum, window_steps = torch.zeros((), device=device), 0
    examples_before, seconds_before = 0, 0.0
    done = False
    state = None if checkpoints is None else checkpoints.load(run, identity)
    if state is not None:
        logger.info("resuming %s at epoch %d, batch %d, step %d", checkpoints, state["epoch"] + 1,
                    state["batches_done"], state["step"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if accelerator.scaler is not None and state["scaler"] is not None:
            accelerator.scaler.load_state_dict(state["scaler"])
        saved = state["history"]
        history = History(**{**saved, "train_loss": [(int(s), float(v)) for s, v in saved["train_loss"]]})
        start_epoch, start_batch, step, done = state["epoch"], state["batches_done"], state["step"], state["done"]
        best_state, epochs_without_gain = state["best_state"], state["epochs_without_gain"]
        window_sum, window_steps = state["window_sum"].to(device), state["window_steps"]
        examples_before, seconds_before = state["examples"], state["seconds"]
        _set_rng_state(state["rng"])
        del state

    examples = examples_before
    start = time.perf_counter()

    def save_checkpoint(epoch: int, batches_done: int) -> None:
        history.seconds = seconds_before + time.perf_counter() - start
        if accelerator.is_main_process:
            position = {"epoch": epoch, "batches_done": batches_done, "step": step, "done": done}
            checkpoints.save({
                **position,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": None if accelerator.scaler is None else accelerator.scaler.state_dict(),
                "rng": _rng_state(),
                "history": history.to_dict(),
                "best_state": best_state,
                "epochs_without_gain": epochs_without_gain,
                "window_sum": window_sum.detach().cpu(),
                "window_steps": window_steps,
                "examples": examples,
                "seconds": history.seconds,
            }, run=run, identity=identity, position=position)
        accelerator.wait_for_everyone()

    def log_window() -> None:
        nonlocal window_sum, window_steps
        history.train_loss.append((step, float(window_sum) / window_steps))
        window_sum, window_steps = torch.zeros((), device=device), 0

    processes, rank = accelerator.num_processes, accelerator.process_index
    bar = tqdm(total=total_steps, initial=step, desc=desc, unit="step",
               disable=not progress or not accelerator.is_local_main_process)
    try:
        for epoch in range(start_epoch, config.epochs):
            if done:
                break
            prepared.train()
            batches = _epoch_batches(config.seed, epoch, lengths, config.batch_size, config.group_by_length)
            position = start_batch if epoch == start_epoch else 0
            while position < num_batches:
                group = batches[position : position + config.grad_accumulation]
                if set_step is not None:
                    set_step(step)
                step_loss = torch.zeros((), device=device)
                for i, rows in enumerate(group):
                    shard = rows[rank::processes] if len(rows) >= processes else rows[:1]
                    inputs = collate(tokenizer, [sequences[r] for r in shard.tolist()], device)
                    last = i == len(group) - 1
                    with contextlib.nullcontext() if last else accelerator.no_sync(prepared):
                        logits = prepared(**inputs).logits
                        value = objective(logits, target_tensor[shard].to(device)) / len(group)
                        accelerator.backward(value)
                    step_loss += value.detach()
                    examples += len(rows)
                if processes > 1:
                    step_loss = accelerator.reduce(step_loss, "mean")
                if not torch.isfinite(step_loss):
                    raise FloatingPointError(
                        f"training loss became {float(step_loss)} at step {step + 1} (epoch {epoch + 1});"
                        f" try a lower lr (config.lr={config.lr}) or precision='fp32'"
                    )
                accelerator.clip_grad_norm_(prepared.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                position += len(group)
                window_sum += step_loss
                window_steps += 1
                if window_steps == config.log_every_steps:
                    log_window()
                bar.update(1)
                if (checkpoints is not None and config.checkpoint_every_steps
                        and step % config.checkpoint_every_steps == 0 and position < num_batches):
                    save_checkpoint(epoch, position)
            history.epochs_run, history.steps = epoch + 1, step
            if validation is not None:
                logits = classification_logits(model, tokenizer, validation, batch_size=config.eval_batch_size,
                                               max_length=max_length)
                log_q = torch.log_softmax(torch.from_numpy(logits).double(), -1)
                y = torch.from_numpy(validation.labels)
                accuracy = float((log_q.argmax(-1) == y).double().mean())
                history.val_epoch.append(epoch + 1)
                history.val_accuracy.append(accuracy)
                history.val_nll.append(float(F.nll_loss(log_q, y)))
                if history.best_val_accuracy is None or accuracy > history.best_val_accuracy:
                    history.best_epoch, history.best_val_accuracy = epoch + 1, accuracy
                    epochs_without_gain = 0
                    if config.patience is not None:
                        best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                else:
                    epochs_without_gain += 1
                if config.patience is not None and epochs_without_gain >= config.patience:
                    history.stopped_early = True
            done = history.stopped_early or epoch + 1 == config.epochs
            if progress:
                current = float(window_sum) / window_steps if window_steps else None
                bar.set_postfix(progress_postfix(history.train_loss[-1][1] if history.train_loss else current,
                                                 history.val_accuracy[-1] if history.val_accuracy else None))
            if checkpoints is not None:
                save_checkpoint(epoch + 1, 0)
        if window_steps:
            log_window()
        if best_state is not None:
            model.load_state_dict(best_state)
    finally:
        bar.close()
    history.seconds = seconds_before + time.perf_counter() - start
    history.examples_per_second = examples / history.seconds if history.seconds > 0 else 0.0
    return history
