"""One training engine for every model family.

A family supplies a :class:`TrainingTask` (batches, forward pass, loss, optimiser, validation)
and its settings (a :class:`TrainSettings` subclass); :func:`fit` runs the loop: precision,
gradient accumulation and clipping, LR schedule, loss windows (:class:`History`), validation,
checkpoint selection on a validation score (``select``), early stopping (``patience`` in epochs), and checkpoints of the whole :class:`LoopState` in the
artifact store (:class:`Checkpointer`) from which a killed run resumes bit for bit.
This package imports neither transformers, accelerate, kfp nor mlflow.
"""

from ptdistill.engine.checkpoints import CHECKPOINT_FORMAT, Checkpointer, run_identity
from ptdistill.engine.history import History, ValidationScores, progress_postfix, resolve_device, seed_everything
from ptdistill.engine.loop import LoopPlan, TorchRuntime, TrainingTask, fit, linear_warmup_decay
from ptdistill.engine.settings import PRECISIONS, SELECTIONS, TrainSettings, autocast_dtype, check_selection
from ptdistill.engine.state import LoopState

__all__ = [
    "CHECKPOINT_FORMAT",
    "PRECISIONS",
    "SELECTIONS",
    "Checkpointer",
    "History",
    "LoopPlan",
    "LoopState",
    "TorchRuntime",
    "TrainSettings",
    "TrainingTask",
    "ValidationScores",
    "autocast_dtype",
    "check_selection",
    "fit",
    "linear_warmup_decay",
    "progress_postfix",
    "resolve_device",
    "run_identity",
    "seed_everything",
]
