"""The training settings every family shares, and the one rule for mixed precision.

Families subclass :class:`TrainSettings` with their own defaults and fields
(:class:`~ptdistill.families.mlp.training.TrainConfig`,
:class:`~ptdistill.families.text.trainer.TextTrainConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ptdistill.checks import finite_real, int_at_least

__all__ = ["PRECISIONS", "SELECTIONS", "TrainSettings", "autocast_dtype", "check_selection"]

#: Precision choices of every family: ``auto``, full ``fp32``, ``bf16`` or ``fp16`` autocast.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Which epoch's weights a run keeps (``TrainSettings.select``): the last epoch's, or the epoch with
#: the best validation accuracy or the lowest validation NLL (a proper score: docs/method.md §7.5).
SELECTIONS = ("last", "accuracy", "nll")


@dataclass
class TrainSettings:
    """What every training run is told: length, batch, optimiser, checkpoint selection, early stopping,
    seed, device, precision.

    ``select`` chooses the epoch whose weights the run ends with (:data:`SELECTIONS`): ``"last"``
    keeps the final weights (the paper's protocol); ``"accuracy"`` or ``"nll"`` validates every
    evaluated epoch and restores the weights of the epoch with the highest validation accuracy
    or the lowest validation NLL (the first such epoch on a tie), which needs a validation split.
    ``patience`` counts epochs without a gain in that score and stops the run (early stopping);
    ``None`` runs every epoch. It needs ``select`` ``"accuracy"`` or ``"nll"``: with ``"last"``
    there is no score to watch. The training loss is averaged over windows
    of ``log_every_steps`` optimiser steps for ``History.train_loss``. ``seed`` seeds the batch
    order and, at the start of the loop, Python's, NumPy's and torch's RNGs (dropout); the
    initial weights are the caller's. ``precision``: see :func:`autocast_dtype`.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int | None = None
    log_every_steps: int = 20
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    select: str = "last"

    def __post_init__(self) -> None:
        int_at_least("epochs", self.epochs, 1)
        int_at_least("batch_size", self.batch_size, 1)
        int_at_least("log_every_steps", self.log_every_steps, 1)
        int_at_least("seed", self.seed, 0)
        if self.select not in SELECTIONS:
            raise ValueError(f"select: expected one of {', '.join(SELECTIONS)}, got {self.select!r}")
        if self.patience is not None:
            try:
                int_at_least("patience", self.patience, 1)
            except ValueError as err:
                raise ValueError(f"{err} (epochs without a gain; null turns early stopping off)") from None
            if self.select == "last":
                raise ValueError(f"patience: early stopping (patience={self.patience}) watches a validation score,"
                                 " but select='last' keeps the final weights; set select to 'nll' (validation NLL,"
                                 " a proper score) or 'accuracy' (how patience worked before select existed), or"
                                 " patience to null to keep the final weights (recipe 'best' sets a patience)")
        finite_real("lr", self.lr, low=0, low_open=True)
        finite_real("weight_decay", self.weight_decay, low=0)
        if not isinstance(self.device, str):
            raise ValueError(f"device: expected 'auto' or a torch device string such as 'cpu', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def batches_per_epoch(self, num_examples: int) -> int:
        """Forward passes per epoch (the last batch may be smaller)."""
        return math.ceil(num_examples / self.batch_size)

    def steps_per_epoch(self, num_examples: int) -> int:
        """Optimiser steps per epoch: one per batch unless a family accumulates gradients."""
        return self.batches_per_epoch(num_examples)

    def total_steps(self, num_examples: int) -> int:
        """Optimiser steps of a full run, e.g. for ``build_loss("annealing_kd", total_steps=...)``."""
        return self.epochs * self.steps_per_epoch(num_examples)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the forward pass for ``precision`` on ``device``; None is full fp32.

    ``"auto"``: bf16 on CUDA when the GPU supports it, else fp16 on CUDA, and fp32 on any other
    device. ``"bf16"`` works on CPU too (CPU autocast); ``"fp16"`` needs CUDA (it trains with a
    gradient scaler). Raises ``ValueError`` for ``"fp16"`` off CUDA or an unknown choice.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError(f"precision: 'fp16' needs CUDA (with a gradient scaler), the device is {device};"
                             " use 'auto', 'fp32' or 'bf16'")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def check_selection(settings: TrainSettings, has_validation: bool) -> None:
    """ValueError, before training, when ``settings`` choose the epoch on validation (``select``,
    ``patience``) and the run has no validation split."""
    if has_validation:
        return
    if settings.patience is not None:
        raise ValueError(f"validation: config.patience={settings.patience} (early stopping) needs a validation split")
    if settings.select != "last":
        raise ValueError(f"validation: config.select={settings.select!r} (checkpoint selection) needs a validation"
                         " split; give one or use select='last'")
