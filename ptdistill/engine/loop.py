"""The one training loop: batches, gradient accumulation, precision, clipping, schedule, loss
windows, validation, early stopping, checkpoints and resume, for every model family.

A family describes its run as a :class:`TrainingTask` (batch order, forward pass, loss,
optimiser and schedule, validation) and calls :func:`fit`. An optimiser step averages
``LoopPlan.grad_accumulation`` batches (the last, partial group of an epoch still steps); the
loss of each step is checked to be finite before it is applied. Validation runs every
``LoopPlan.eval_every_epochs`` epochs and after the last; the run ends with the weights of the
epoch that ``TrainSettings.select`` chooses (the last, or the best validation accuracy or NLL),
and ``patience`` epochs without a gain in that score stop it early. With a
:class:`~ptdistill.engine.checkpoints.Checkpointer` the whole :class:`LoopState` is saved every
``LoopPlan.checkpoint_every_steps`` optimiser steps (0: never mid-epoch) and at every epoch end,
and a restarted run resumes from the latest checkpoint, mid-epoch if that is where it stopped;
on CPU it ends with the same weights and history, bit for bit, as an uninterrupted run.

Multi-process runs (the text family's accelerate runtime): the main process writes
checkpoints; every process evaluates the full validation split, so early stopping decides the
same everywhere; a resumed multi-process run restores the main process's RNG states in every
process, so it continues correctly but not bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ptdistill.checks import finite_real, int_at_least
from ptdistill.engine.checkpoints import Checkpointer, rng_state, set_rng_state
from ptdistill.engine.history import History, ValidationScores, progress_postfix, resolve_device, seed_everything
from ptdistill.engine.settings import TrainSettings, autocast_dtype
from ptdistill.engine.state import LoopState

__all__ = ["LoopPlan", "TorchRuntime", "TrainingTask", "fit", "linear_warmup_decay"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopPlan:
    """How a family's loop is shaped beyond :class:`TrainSettings`.

    ``grad_accumulation`` batches per optimiser step; ``max_grad_norm`` clips the gradient norm
    before each step (None: no clipping); ``checkpoint_every_steps`` optimiser steps between
    mid-epoch checkpoints (0: at epoch ends only); validation every ``eval_every_epochs`` epochs.
    """

    grad_accumulation: int = 1
    max_grad_norm: float | None = None
    checkpoint_every_steps: int = 0
    eval_every_epochs: int = 1

    def __post_init__(self) -> None:
        int_at_least("grad_accumulation", self.grad_accumulation, 1)
        int_at_least("checkpoint_every_steps", self.checkpoint_every_steps, 0)
        int_at_least("eval_every_epochs", self.eval_every_epochs, 1)
        if self.max_grad_norm is not None:
            finite_real("max_grad_norm", self.max_grad_norm, low=0, low_open=True)


class TrainingTask(ABC):
    """A family's side of a training run: what the loop cannot know. Batches are row-index tensors."""

    #: Label of the progress bar.
    desc: str = "train"
    #: Training examples per epoch (the loop's step count is ``settings.total_steps(num_examples)``).
    num_examples: int

    @abstractmethod
    def epoch_batches(self, epoch: int, generator: torch.Generator) -> list[torch.Tensor]:
        """The batches (row indices, int64) of epoch ``epoch`` (0-based), in order.

        ``generator`` is the run's batch-order generator, seeded from ``TrainSettings.seed`` and
        saved with each checkpoint at the start of the epoch: a task that draws from it (and
        nothing else) gets the same order on resume.
        """

    @abstractmethod
    def forward(self, model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of ``model`` on the examples ``rows``; runs under the loop's autocast."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The scalar training loss of ``logits`` against the targets of ``rows`` (outside autocast)."""

    @abstractmethod
    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The optimiser of ``model``'s parameters (already on the run's device)."""

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
        """The learning-rate schedule, stepped once per optimiser step; None keeps the rate constant."""
        return None

    def before_step(self, step: int) -> None:
        """Called with the global step (0, 1, ...) before each optimiser step (e.g. Annealing KD's temperature)."""

    def evaluate(self, model: nn.Module) -> ValidationScores | None:
        """``model``'s scores on the validation split, or None when there is none."""
        return None


def linear_warmup_decay(warmup: int, total: int) -> Callable[[int], float]:
    """LR factor of step ``s``: linear from 0 to 1 over ``warmup`` steps, then linear to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


class TorchRuntime:
    """One process on one device: autocast of the forward pass (:func:`autocast_dtype`) and a
    gradient scaler for fp16. Other runtimes (several processes) override its methods."""

    num_processes = 1
    process_index = 0
    is_main_process = True

    def __init__(self, device: torch.device, precision: str) -> None:
        self.device = device
        self.dtype = autocast_dtype(precision, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == torch.float16 else None

    def prepare(self, model: nn.Module, optimizer, scheduler) -> tuple:
        """(model to train, optimizer, scheduler), ready for this runtime."""
        return model.to(self.device), optimizer, scheduler

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This process's part of a batch."""
        return rows

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """No gradient synchronisation across processes (accumulating batches)."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def clip_grad_norm_(self, model: nn.Module, max_norm: float, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def wait_for_everyone(self) -> None:
        """A barrier across processes."""


def fit(model: nn.Module, task: TrainingTask, settings: TrainSettings, *, plan: LoopPlan = LoopPlan(),
        runtime: TorchRuntime | None = None, checkpoints: Checkpointer | None = None,
        identity: tuple[str, dict] | None = None, progress: bool = False,
        on_epoch: Callable[[int, History], None] | None = None) -> History:
    """Train ``model`` in place on ``task``; return its :class:`History`.

    ``runtime`` defaults to :class:`TorchRuntime` on ``settings.device`` at ``settings.precision``.
    With ``checkpoints``, ``identity`` is (``content_key`` of the identity, the identity) of
    :func:`~ptdistill.engine.checkpoints.run_identity`: the run resumes from its latest checkpoint
    and a checkpoint of another run is refused (see :class:`Checkpointer`). ``on_epoch(epoch,
    history)`` is called after each epoch (1-based) with the weights of that epoch. A resumed run's
    ``History.seconds`` and ``examples_per_second`` include earlier sessions up to their last checkpoint.
    Raises ``FloatingPointError`` when a step's loss is not finite (the step is not applied), and
    ``ValueError`` when ``settings.select`` needs validation scores the task does not give.
    """
    if settings.patience is not None and plan.eval_every_epochs != 1:
        raise ValueError(f"patience: early stopping counts epochs and validates after each one; got"
                         f" eval_every_epochs={plan.eval_every_epochs}")
    if checkpoints is not None and identity is None:
        raise ValueError("identity: checkpoints need the run's (hash, identity) to know which checkpoint is this run's")
    if runtime is None:
        runtime = TorchRuntime(resolve_device(settings.device), settings.precision)
    return _Loop(model, task, settings, plan, runtime, checkpoints, identity, on_epoch).run(progress)


class _Loop:
    """One run of :func:`fit`: the live objects and the :class:`LoopState`."""

    def __init__(self, model: nn.Module, task: TrainingTask, settings: TrainSettings, plan: LoopPlan,
                 runtime: TorchRuntime, checkpoints: Checkpointer | None, identity: tuple[str, dict] | None,
                 on_epoch: Callable[[int, History], None] | None) -> None:
        self.model, self.task, self.settings, self.plan, self.runtime = model, task, settings, plan, runtime
        self.checkpoints, self.identity, self.on_epoch = checkpoints, identity, on_epoch
        optimizer = task.make_optimizer(model)
        self.prepared, self.optimizer, self.scheduler = runtime.prepare(model, optimizer, task.make_scheduler(optimizer))
        seed_everything(settings.seed)  # dropout
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.epoch_rng = self.generator.get_state()
        self.state = LoopState(window_sum=torch.zeros((), device=runtime.device))
        self.seconds_before = 0.0
        saved = None if checkpoints is None else checkpoints.load(*identity)
        if saved is not None:
            self._restore(LoopState.from_blob(saved))

    def _restore(self, state: LoopState) -> None:
        logger.info("resuming %s at epoch %d, batch %d, step %d", self.checkpoints, state.epoch + 1,
                    state.batches_done, state.step)
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state.scheduler)
        if self.runtime.scaler is not None and state.scaler is not None:
            self.runtime.scaler.load_state_dict(state.scaler)
        set_rng_state(state.rng)
        self.generator.set_state(state.batch_rng)
        state.window_sum = state.window_sum.to(self.runtime.device)
        state.model = state.optimizer = state.scheduler = state.scaler = state.rng = state.batch_rng = None
        self.seconds_before = state.seconds
        self.state = state

    def run(self, progress: bool) -> History:
        state, history = self.state, self.state.history
        self.start = time.perf_counter()
        bar = tqdm(total=self.settings.total_steps(self.task.num_examples), initial=state.step, desc=self.task.desc, unit="step",
                   disable=not progress or not self.runtime.is_main_process)
        try:
            while not state.done and state.epoch < self.settings.epochs:
                self._epoch(bar)
            if state.window_steps:
                self._log_window()
            if state.best_weights is not None:
                self.model.load_state_dict(state.best_weights)
        finally:
            bar.close()
        history.seconds = self._seconds()
        history.examples_per_second = state.examples / history.seconds if history.seconds > 0 else 0.0
        return history

    def _seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start

    def _epoch(self, bar: tqdm) -> None:
        state = self.state
        self.prepared.train()
        self.epoch_rng = self.generator.get_state()
        batches = self.task.epoch_batches(state.epoch, self.generator)
        every = self.plan.checkpoint_every_steps
        while state.batches_done < len(batches):
            self._step(batches[state.batches_done : state.batches_done + self.plan.grad_accumulation])
            bar.update(1)
            if self.checkpoints is not None and every and state.step % every == 0 and state.batches_done < len(batches):
                self._save()
        state.epoch, state.batches_done = state.epoch + 1, 0
        state.history.epochs_run, state.history.steps = state.epoch, state.step
        self._evaluate()
        state.done = state.history.stopped_early or state.epoch == self.settings.epochs
        history = state.history
        current = float(state.window_sum) / state.window_steps if state.window_steps else None
        bar.set_postfix(progress_postfix(history.train_loss[-1][1] if history.train_loss else current,
                                         history.val_accuracy[-1] if history.val_accuracy else None))
        if self.on_epoch is not None:
            self.on_epoch(state.epoch, history)
        if self.checkpoints is not None:
            self._save()

    def _step(self, group: list[torch.Tensor]) -> None:
        """One optimiser step over the batches of ``group``."""
        state, runtime = self.state, self.runtime
        self.task.before_step(state.step)
        step_loss = torch.zeros((), device=runtime.device)
        for i, rows in enumerate(group):
            shard = runtime.shard(rows)
            with contextlib.nullcontext() if i == len(group) - 1 else runtime.no_sync(self.prepared):
                with runtime.autocast():
                    logits = self.task.forward(self.prepared, shard)
                value = self.task.loss(logits, shard) / len(group)
                runtime.backward(value)
            step_loss += value.detach()
            state.examples += len(rows)
        step_loss = runtime.reduce_mean(step_loss)
        if not torch.isfinite(step_loss):
            raise FloatingPointError(
                f"training loss became {float(step_loss)} at step {state.step + 1} (epoch {state.epoch + 1});"
                f" try a lower lr (config.lr={self.settings.lr}) or precision='fp32'"
            )
        if self.plan.max_grad_norm is not None:
            runtime.clip_grad_norm_(self.prepared, self.plan.max_grad_norm, self.optimizer)
        runtime.step(self.optimizer)
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.batches_done += len(group)
        state.window_sum += step_loss
        state.window_steps += 1
        if state.window_steps == self.settings.log_every_steps:
            self._log_window()

    def _log_window(self) -> None:
        state = self.state
        state.history.train_loss.append((state.step, float(state.window_sum) / state.window_steps))
        state.window_sum, state.window_steps = torch.zeros((), device=self.runtime.device), 0

    def _evaluate(self) -> None:
        """Validate after epoch ``state.epoch`` if due; track the selected epoch; decide early stopping."""
        state, history, settings = self.state, self.state.history, self.settings
        if state.epoch % self.plan.eval_every_epochs and state.epoch != settings.epochs:
            return
        scores = self.task.evaluate(self.model)
        if scores is None:
            if settings.select != "last":
                raise ValueError(f"select: {settings.select!r} chooses the epoch on validation scores, and this"
                                 " run has no validation split; give one or use select='last'")
            return
        scores = ValidationScores(*scores)
        history.val_epoch.append(state.epoch)
        history.val_accuracy.append(scores.accuracy)
        history.val_nll.append(scores.nll)
        history.val_ece.append(scores.ece)
        history.select = settings.select
        if history.best_epoch is None or _better(settings.select, scores, history):
            history.best_epoch = state.epoch
            history.best_val_accuracy, history.best_val_nll, history.best_val_ece = scores
            state.epochs_without_gain = 0
            if settings.select != "last" and state.epoch != settings.epochs:
                state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            elif settings.select != "last":
                state.best_weights = None  # the final weights are the selected ones
        else:
            state.epochs_without_gain += 1
        if settings.patience is not None and state.epochs_without_gain >= settings.patience \
                and state.epoch < settings.epochs:  # out of patience at the last epoch is not an early stop
            history.stopped_early = True

    def _save(self) -> None:
        """Checkpoint the whole state (main process), then wait for every process."""
        state = self.state
        state.seconds = state.history.seconds = self._seconds()
        if self.runtime.is_main_process:
            blob = LoopState(**{**vars(state), "model": self.model.state_dict(),
                                "optimizer": self.optimizer.state_dict(),
                                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                                "scaler": None if self.runtime.scaler is None else self.runtime.scaler.state_dict(),
                                "rng": rng_state(),
                                "batch_rng": self.generator.get_state() if state.batches_done == 0 else self.epoch_rng})
            run_hash, identity = self.identity
            self.checkpoints.save(blob.to_blob(), run=run_hash, identity=identity, position=state.position())
        self.runtime.wait_for_everyone()


def _better(select: str, scores: ValidationScores, history: History) -> bool:
    """Whether ``scores`` beat the selected epoch's under ``select`` (a tie keeps the earlier epoch)."""
    if select == "accuracy":
        return scores.accuracy > history.best_val_accuracy
    if select == "nll":
        return scores.nll < history.best_val_nll
    return True  # "last": every evaluated epoch replaces the one before
