"""MLP training on the shared engine: the teacher on labels, students on teacher probabilities only.

One task (:class:`_FeatureTask` on :func:`ptdistill.engine.fit`) serves both, so teacher,
students and the oracle student (``distill`` on ``p_star`` with the ``kl`` loss) differ only in
their targets and objective. The student
loop never reads ``train.labels``: in the paper's protocol the distillation set is unlabeled.

Determinism: batches are shuffled by the engine's generator seeded from ``TrainConfig.seed``;
weight initialisation belongs to the caller (call :func:`~ptdistill.engine.seed_everything` before
building the model). On CPU the same seed then gives the same weights bit for bit, also across a resume from
a checkpoint (``checkpoints=``: see :class:`ptdistill.engine.Checkpointer`).

Speed on CPU: these MLPs are too small for intra-op parallelism. On a shared 2-core machine,
torch's default of one thread per core made a batch-32 step about 5x slower than
``torch.set_num_threads(1)``, which the calling process should set (it is process-global, so
this module leaves it alone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ptdistill.metrics import ece
from ptdistill.checks import check_probs, int_at_least
from ptdistill.engine import (
    Checkpointer,
    History,
    LoopPlan,
    TrainingTask,
    TrainSettings,
    check_selection,
    ValidationScores,
    fit,
    resolve_device,
    run_identity,
)
from ptdistill.families.mlp.split import FeatureSplit
from ptdistill.storage import content_key

__all__ = [
    "TrainConfig",
    "distill",
    "predict_probs",
    "train_classifier",
]

#: Config fields that do not change what a run computes, so a run resumes across changes to them.
_NOT_IN_RUN_ID = ("device",)


@dataclass
class TrainConfig(TrainSettings):
    """Optimisation settings. Defaults are the paper's synthetic MLPs: Adam, lr 5e-4, batch 32, 100 epochs.

    The shared fields are :class:`~ptdistill.engine.TrainSettings`' (``patience`` in epochs,
    ``precision``). Validation runs every ``eval_every_epochs`` epochs and after the last; early
    stopping validates after every epoch, so ``patience`` needs ``eval_every_epochs=1``
    (``patience`` counted evaluations before the one engine; with every-epoch validation that
    is the same number, and any other combination is refused rather than reinterpreted).
    """

    #: The ``patience`` of early stopping in the ``best`` recipe (:data:`ptdistill.experiments.RECIPES`):
    #: 5 epochs of a 100-epoch run. On the synthetic task the teacher's validation NLL is lowest near
    #: epoch 4 and climbs after it (issue 14's study), so 5 epochs without a gain ends the run well
    #: past noise but long before its 100 epochs.
    early_stopping_patience: ClassVar[int] = 5

    epochs: int = 100
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.0
    eval_every_epochs: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        int_at_least("eval_every_epochs", self.eval_every_epochs, 1)
        if self.patience is not None and self.eval_every_epochs != 1:
            raise ValueError(
                f"patience: counts epochs and early stopping validates after every epoch, so it needs"
                f" eval_every_epochs=1, got {self.eval_every_epochs} (patience once counted evaluations"
                f" every eval_every_epochs epochs: set patience to that many epochs and eval_every_epochs to 1)"
            )


def _check_features(name: str, features: np.ndarray, dim: int | None = None) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] < 1:
        raise ValueError(f"{name}: expected features of shape (n, d) with n >= 1, got {features.shape}")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(
            f"{name}: expected {dim} features per example (as the training split), got {features.shape[1]}"
        )
    return np.ascontiguousarray(features, dtype=np.float32)


def _num_outputs(model: nn.Module, features: torch.Tensor) -> int:
    """Number of classes the model predicts, from one forward pass on one example."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        logits = model(features[:1])
    model.train(was_training)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"model: expected logits of shape (B, C) with C >= 2, got {tuple(logits.shape)}")
    return logits.shape[1]


def _check_labels(name: str, labels: np.ndarray, num_classes: int) -> None:
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}) for a model with {num_classes} outputs,"
            f" got range [{labels.min()}, {labels.max()}]"
        )


def _validation_tensors(
    validation: FeatureSplit | None, dim: int, num_classes: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    if validation is None:
        return None
    if not isinstance(validation, FeatureSplit):
        raise ValueError(f"validation: expected a FeatureSplit, got {type(validation).__name__}")
    if validation.labels is None:
        raise ValueError("validation: has no labels; early stopping and validation metrics need a labeled split")
    _check_features("validation.features", validation.features, dim)
    _check_labels("validation.labels", validation.labels, num_classes)
    return torch.tensor(validation.features).to(device), torch.tensor(validation.labels).to(device)


def _validate(
    model: nn.Module, features: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024
) -> ValidationScores:
    """Validation accuracy, NLL and ECE, in fp32 (NLL summed per batch, as the goldens of tests/test_engine.py)."""
    was_training = model.training
    model.eval()
    correct, nll, probs = 0.0, 0.0, []
    with torch.inference_mode():
        for lo in range(0, len(features), batch_size):
            log_q = torch.log_softmax(model(features[lo : lo + batch_size]).float(), -1)
            y = labels[lo : lo + batch_size]
            correct += float((log_q.argmax(-1) == y).sum())
            nll += float(F.nll_loss(log_q, y, reduction="sum"))
            probs.append(log_q.exp())
    model.train(was_training)
    return ValidationScores(correct / len(features), nll / len(features), ece(torch.cat(probs), labels))


class _FeatureTask(TrainingTask):
    """Minibatch Adam on ``objective(logits, targets[batch])``; one random permutation per epoch."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, objective: Callable, config: TrainConfig,
                 validation: tuple[torch.Tensor, torch.Tensor] | None, desc: str) -> None:
        self.features, self.targets, self.objective, self.config = features, targets, objective, config
        self.validation, self.desc, self.num_examples = validation, desc, len(features)
        self.set_step = getattr(objective, "set_step", None)

    def epoch_batches(self, epoch: int, generator: torch.Generator) -> list[torch.Tensor]:
        order = torch.randperm(self.num_examples, generator=generator)
        return list(order.split(self.config.batch_size))

    def forward(self, model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        return model(self.features[rows.to(self.features.device)])

    def loss(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.objective(logits, self.targets[rows.to(self.targets.device)])  # losses compute in fp32 themselves

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        # The fused kernel is 10-20% faster per step than foreach for these small MLPs on CPU.
        device = next(model.parameters()).device
        return torch.optim.Adam(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay,
                                fused=device.type in ("cpu", "cuda"))

    def before_step(self, step: int) -> None:
        if self.set_step is not None:
            self.set_step(step)

    def evaluate(self, model: nn.Module) -> ValidationScores | None:
        return None if self.validation is None else _validate(model, *self.validation)


def _prepare(
    model: nn.Module, train: FeatureSplit, config: TrainConfig, validation: FeatureSplit | None
) -> tuple[torch.device, torch.Tensor, int]:
    """Check the arguments shared by train_classifier and distill; move the model; return device, features, C."""
    if not isinstance(train, FeatureSplit):
        raise ValueError(f"train: expected a FeatureSplit, got {type(train).__name__}")
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config: expected a TrainConfig, got {type(config).__name__}")
    check_selection(config, validation is not None)
    device = resolve_device(config.device)
    model.to(device)
    features = torch.tensor(train.features).to(device)
    return device, features, _num_outputs(model, features)


def _fit(model: nn.Module, train: FeatureSplit, targets: torch.Tensor, objective: Callable, config: TrainConfig,
         validation: FeatureSplit | None, features: torch.Tensor, num_classes: int, *,
         probs: np.ndarray | None, checkpoints: Checkpointer | None, progress: bool,
         on_epoch: Callable[[int, History], None] | None, desc: str) -> History:
    """Run the engine on the checked inputs (already on the model's device)."""
    val = _validation_tensors(validation, train.dim, num_classes, features.device)
    key = None
    if checkpoints is not None:
        identity = run_identity(
            config, ignore=_NOT_IN_RUN_ID, targets=probs, loss=None if probs is None else objective, model=model,
            data={"train": train.fingerprint(), "validation": None if validation is None else validation.fingerprint()},
        )
        key = (content_key(identity), identity)
        checkpoints.find(*key)  # a checkpoint of another run is refused before the model is touched
    task = _FeatureTask(features, targets, objective, config, val, desc)
    return fit(model, task, config, plan=LoopPlan(eval_every_epochs=config.eval_every_epochs),
               checkpoints=checkpoints, identity=key, progress=progress, on_epoch=on_epoch)


def train_classifier(
    model: nn.Module,
    train: FeatureSplit,
    config: TrainConfig,
    validation: FeatureSplit | None = None,
    progress: bool = False,
    on_epoch: Callable[[int, History], None] | None = None,
    checkpoints: Checkpointer | None = None,
) -> History:
    """Train ``model`` in place on ``train.labels`` with cross-entropy: the teacher (or a one-hot baseline).

    With ``checkpoints`` the run saves its state at every epoch end and resumes from the latest
    checkpoint of the same run (see :class:`~ptdistill.engine.Checkpointer`); clear them after success.
    """
    if isinstance(train, FeatureSplit) and train.labels is None:
        raise ValueError("train: has no labels (a distillation split?); train_classifier needs a labeled split")
    device, features, num_classes = _prepare(model, train, config, validation)
    _check_labels("train.labels", train.labels, num_classes)
    labels = torch.tensor(train.labels).to(device)
    return _fit(model, train, labels, _cross_entropy, config, validation, features, num_classes, probs=None,
                checkpoints=checkpoints, progress=progress, on_epoch=on_epoch, desc="teacher")


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


def distill(
    model: nn.Module,
    train: FeatureSplit,
    teacher_probs: np.ndarray,
    loss: nn.Module,
    config: TrainConfig,
    validation: FeatureSplit | None = None,
    progress: bool = False,
    on_epoch: Callable[[int, History], None] | None = None,
    checkpoints: Checkpointer | None = None,
) -> History:
    """Train ``model`` in place on ``teacher_probs`` (n, C) for ``train.features`` with a registry loss.

    ``train.labels`` is never read. If ``loss`` has ``set_step`` (Annealing KD) it is called with
    the global step (0, 1, ...) before each batch. The oracle student is
    ``distill(model, split, split.p_star, build_loss("kl"), config)``. ``checkpoints`` as for
    :func:`train_classifier`.
    """
    device, features, num_classes = _prepare(model, train, config, validation)
    probs = np.asarray(teacher_probs)
    if probs.shape != (len(train), num_classes):
        raise ValueError(
            f"teacher_probs: expected shape ({len(train)}, {num_classes}) (train examples, model outputs),"
            f" got {probs.shape}"
        )
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"teacher_probs: expected floating-point probabilities, got dtype {probs.dtype}")
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    targets = torch.tensor(probs).to(device)
    check_probs("teacher_probs", targets)
    loss.to(device)
    return _fit(model, train, targets, loss, config, validation, features, num_classes, probs=probs,
                checkpoints=checkpoints, progress=progress, on_epoch=on_epoch, desc="student")


def predict_probs(
    model: nn.Module, features: np.ndarray, batch_size: int = 1024, device: str = "auto"
) -> np.ndarray:
    """Class probabilities (n, C) float64 of ``model`` (moved to ``device``), in eval mode, fp32 logits."""
    features = _check_features("features", features)
    int_at_least("batch_size", batch_size, 1)
    resolved = resolve_device(device)
    model.to(resolved)
    was_training = model.training
    model.eval()
    chunks = []
    with torch.inference_mode():
        for lo in range(0, len(features), batch_size):
            logits = model(torch.tensor(features[lo : lo + batch_size]).to(resolved))
            chunks.append(torch.softmax(logits.double(), -1).cpu())
    model.train(was_training)
    return torch.cat(chunks).numpy()
