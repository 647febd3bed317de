"""Fine-tuning and distillation of Hugging Face sequence classifiers on the shared engine.

One task (:class:`_TextTask` on :func:`ptdistill.engine.fit`) serves the teacher (cross-entropy
on ``train.labels``) and the students (a registry loss on teacher probabilities;
``train.labels`` is never read), as :mod:`ptdistill.families.mlp.training` does for the MLPs.
AdamW (no weight decay on biases and LayerNorm weights, i.e. on 1-d parameters), linear warm-up
then linear decay, gradient accumulation, clipping at 1.0, and mixed precision / multi-GPU
through ``accelerate.Accelerator`` (:class:`AccelerateRuntime`).

Batches: the split is tokenised once (:func:`~ptdistill.families.text.batching.encode`); epoch ``e``
visits the examples in a permutation drawn from a generator seeded by ``(config.seed, e)``
alone, so any epoch's order is known without replaying the earlier ones, and each batch is
padded to its own longest example (:func:`~ptdistill.families.text.batching.collate`).
``config.batch_size`` is the batch of one forward pass on the whole machine: with several
processes each takes its share of every batch (accelerate's ``split_batches``), so the
optimisation is the same on 1 or N GPUs. An optimiser step averages ``grad_accumulation``
batches; the last, partial group of an epoch still steps.

Checkpoints (:class:`~ptdistill.engine.Checkpointer`): every ``checkpoint_every_steps`` optimiser
steps and at every epoch end the engine saves its whole loop state; :func:`fit_text` resumes
from the latest checkpoint of the same run, mid-epoch if that is where it stopped. On CPU a
resumed run ends with the same weights, bit for bit, as an uninterrupted one. A run is
identified by the config (without the settings that do not change the result: device,
eval_batch_size, checkpoint_every_steps, gradient_checkpointing), the training split and its
token ids, the targets, the loss and the model's architecture and initial weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ptdistill.metrics import ece
from ptdistill.checks import check_probs, finite_real, int_at_least
from ptdistill.engine import (
    Checkpointer,
    History,
    LoopPlan,
    TorchRuntime,
    TrainingTask,
    TrainSettings,
    ValidationScores,
    autocast_dtype,
    check_selection,
    fit,
    linear_warmup_decay,
    resolve_device,
    run_identity,
)
from ptdistill.extras import require
from ptdistill.families.text.batching import classification_logits, collate, encode
from ptdistill.families.text.split import TextSplit
from ptdistill.storage import content_key

__all__ = ["AccelerateRuntime", "TextTrainConfig", "fit_text"]

DEVICES = ("auto", "cpu", "cuda")
#: Gradient-norm clipping threshold (as in BERT fine-tuning recipes).
MAX_GRAD_NORM = 1.0
#: Config fields that do not change what a run computes, so a run resumes across changes to them.
_NOT_IN_RUN_ID = ("device", "eval_batch_size", "checkpoint_every_steps", "gradient_checkpointing")
#: accelerate's ``mixed_precision`` for each autocast dtype of :func:`ptdistill.engine.autocast_dtype`.
_ACCELERATE_PRECISION = {None: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class TextTrainConfig(TrainSettings):
    """Fine-tuning settings; defaults follow BERT fine-tuning (the paper's lr grid is {2, 3, 5}e-5).

    ``batch_size`` examples per forward pass, ``grad_accumulation`` passes per optimiser step.
    ``warmup_ratio`` of all optimiser steps warm the learning rate up linearly, then it decays
    linearly to 0. The shared fields (``patience`` in epochs, ``precision``) are
    :class:`~ptdistill.engine.TrainSettings`'. ``checkpoint_every_steps`` optimiser
    steps between checkpoints (0: only at epoch ends). ``gradient_checkpointing`` trades compute for memory on any device
    (the model must support it). ``device``: ``"auto"``, ``"cpu"`` or ``"cuda"`` (which GPUs:
    ``CUDA_VISIBLE_DEVICES`` / ``accelerate launch``). ``group_by_length`` draws each batch from
    examples of similar length (as Hugging Face's Trainer option of that name): within windows of
    50 batches of a random order, examples are sorted by length and cut into batches, whose order
    is shuffled again. Batches then pad to their own length, not to a random long example's: on
    review snippets (mean 27 tokens, longest 68) that is half the tokens of random batches.
    """

    #: The ``patience`` of early stopping in the ``best`` recipe (:data:`ptdistill.experiments.RECIPES`):
    #: 1 epoch, because fine-tunes run 2-3 epochs; a longer patience could never stop one early.
    early_stopping_patience: ClassVar[int] = 1

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
        super().__post_init__()
        int_at_least("grad_accumulation", self.grad_accumulation, 1)
        int_at_least("checkpoint_every_steps", self.checkpoint_every_steps, 0)
        int_at_least("eval_batch_size", self.eval_batch_size, 1)
        finite_real("warmup_ratio", self.warmup_ratio, low=0)
        if not self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio: expected a fraction in [0, 1), got {self.warmup_ratio!r}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(f"gradient_checkpointing: expected True or False, got {self.gradient_checkpointing!r}")
        if self.device not in DEVICES:
            raise ValueError(
                f"device: expected one of {', '.join(DEVICES)}, got {self.device!r}"
                " (choose GPUs with CUDA_VISIBLE_DEVICES or accelerate launch)"
            )

    def steps_per_epoch(self, num_examples: int) -> int:
        """Optimiser steps per epoch (the last accumulation group may be partial)."""
        return math.ceil(self.batches_per_epoch(num_examples) / self.grad_accumulation)

    def warmup_steps(self, num_examples: int) -> int:
        """Optimiser steps of linear warm-up."""
        return math.ceil(self.warmup_ratio * self.total_steps(num_examples))


class AccelerateRuntime(TorchRuntime):
    """The engine's runtime through ``accelerate.Accelerator``: one or several processes (``accelerate
    launch``), mixed precision as :func:`ptdistill.engine.autocast_dtype` says for the device."""

    def __init__(self, config: TextTrainConfig) -> None:
        self.accelerator = _accelerator(config)
        self.device = self.accelerator.device
        self.num_processes = self.accelerator.num_processes
        self.process_index = self.accelerator.process_index
        self.is_main_process = self.accelerator.is_main_process

    @property
    def scaler(self):
        return self.accelerator.scaler

    def prepare(self, model: nn.Module, optimizer, scheduler) -> tuple:
        return self.accelerator.prepare(model, optimizer, scheduler)

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # the prepared model's forward autocasts itself

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        processes = self.num_processes
        return rows[self.process_index :: processes] if len(rows) >= processes else rows[:1]

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return self.accelerator.no_sync(model)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(value, "mean") if self.num_processes > 1 else value

    def clip_grad_norm_(self, model: nn.Module, max_norm: float, optimizer: torch.optim.Optimizer) -> None:
        self.accelerator.clip_grad_norm_(model.parameters(), max_norm)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()  # accelerate's optimizer wrapper steps the grad scaler

    def wait_for_everyone(self) -> None:
        self.accelerator.wait_for_everyone()


def _accelerator(config: TextTrainConfig):
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    from accelerate import Accelerator  # text extra: imported when used, so configs import without it
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DataLoaderConfiguration

    device = resolve_device(config.device)
    mixed_precision = _ACCELERATE_PRECISION[autocast_dtype(config.precision, device)]
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
    the initial weights are the caller's. The loop is :func:`ptdistill.engine.fit`'s.
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
    check_selection(config, validation is not None)
    probs, target_tensor, objective = _objective(train, targets, loss, num_classes)

    sequences = encode(tokenizer, train, max_length)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token first")
    key = None
    if checkpoints is not None:
        identity = run_identity(config, ignore=_NOT_IN_RUN_ID, targets=probs, loss=loss, model=model,
                                data=_data_identity(train, sequences, validation))
        key = (content_key(identity), identity)
        checkpoints.find(*key)  # a checkpoint of another run is refused before the model is touched

    runtime = AccelerateRuntime(config)
    own_forward = model.__dict__.get("forward")  # an instance-level forward the caller set, if any
    enabled_checkpointing = config.gradient_checkpointing and _enable_activation_checkpointing(model)
    try:
        task = _TextTask(tokenizer, sequences, target_tensor, objective, loss, config, validation, max_length,
                         runtime.device, desc="teacher" if probs is None else "student")
        return fit(model, task, config, plan=LoopPlan(grad_accumulation=config.grad_accumulation,
                                                      max_grad_norm=MAX_GRAD_NORM,
                                                      checkpoint_every_steps=config.checkpoint_every_steps),
                   runtime=runtime, checkpoints=checkpoints, identity=key, progress=progress)
    finally:
        if enabled_checkpointing:
            _disable_activation_checkpointing(model)
        _restore_forward(model, own_forward)
        runtime.accelerator.free_memory()


def _objective(train: TextSplit, targets: np.ndarray | None, loss: Callable | None,
               num_classes: int) -> tuple[np.ndarray | None, torch.Tensor, Callable]:
    """(checked teacher probabilities or None, the training targets, the objective) of :func:`fit_text`."""
    if targets is not None:
        if loss is None or not callable(loss):
            raise ValueError(f"loss: expected a loss such as build_loss('kl') to distill on targets, got {loss!r}")
        probs = _check_targets(targets, len(train), num_classes)
        return probs, torch.from_numpy(probs), loss
    if loss is not None:
        raise ValueError("loss: is only used with targets (teacher probabilities); without targets the model"
                         " is trained on train.labels with cross-entropy")
    if train.labels is None:
        raise ValueError("train: has no labels (a distillation split?); pass targets= (teacher probabilities)"
                         " and loss= to distill on it")
    _check_split_labels("train", train, num_classes)
    return None, torch.tensor(train.labels), _cross_entropy  # a copy: arrays read from parquet are read-only


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


class _TextTask(TrainingTask):
    """Batches of token sequences, padded per batch, against labels or teacher probabilities."""

    def __init__(self, tokenizer, sequences: list, targets: torch.Tensor, objective: Callable,
                 loss: Callable | None, config: TextTrainConfig, validation: TextSplit | None, max_length: int,
                 device: torch.device, desc: str) -> None:
        self.tokenizer, self.sequences, self.targets, self.objective = tokenizer, sequences, targets, objective
        self.config, self.validation, self.max_length, self.device, self.desc = (
            config, validation, max_length, device, desc)
        self.num_examples = len(sequences)
        self.lengths = torch.tensor([len(s["input_ids"]) for s in sequences])
        self.set_step = getattr(loss, "set_step", None)
        if isinstance(objective, nn.Module):
            objective.to(device)

    def epoch_batches(self, epoch: int, generator: torch.Generator) -> list[torch.Tensor]:
        config = self.config
        return _epoch_batches(config.seed, epoch, self.lengths, config.batch_size, config.group_by_length)

    def forward(self, model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        inputs = collate(self.tokenizer, [self.sequences[r] for r in rows.tolist()], self.device)
        return model(**inputs).logits

    def loss(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.objective(logits, self.targets[rows].to(self.device))

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(_optimizer_groups(model, self.config.weight_decay), lr=self.config.lr)

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        n = self.num_examples
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, linear_warmup_decay(self.config.warmup_steps(n), self.config.total_steps(n)))

    def before_step(self, step: int) -> None:
        if self.set_step is not None:
            self.set_step(step)

    def evaluate(self, model: nn.Module) -> ValidationScores | None:
        validation = self.validation
        if validation is None:
            return None
        logits = classification_logits(model, self.tokenizer, validation, batch_size=self.config.eval_batch_size,
                                       max_length=self.max_length)
        log_q = torch.log_softmax(torch.from_numpy(logits).double(), -1)
        y = torch.from_numpy(validation.labels)
        return ValidationScores(float((log_q.argmax(-1) == y).double().mean()), float(F.nll_loss(log_q, y)),
                                ece(log_q.exp(), y))


def _data_identity(train: TextSplit, sequences: list, validation: TextSplit | None) -> dict:
    """The splits' part of the run identity: fingerprints and a hash of the token ids."""
    tokens = hashlib.sha256()
    for example in sequences:
        for key in sorted(example):
            tokens.update(key.encode() + np.asarray(example[key], dtype=np.int64).tobytes() + b";")
    return {"train": train.fingerprint(), "train_tokens": tokens.hexdigest(),
            "validation": None if validation is None else validation.fingerprint()}
