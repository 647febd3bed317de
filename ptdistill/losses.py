"""Distillation losses against teacher probabilities, selectable by name.

Every loss compares student logits ``(B, C)`` with teacher probabilities ``(B, C)`` and reduces
over the batch like torch (``"mean"`` by default, ``"sum"`` or ``"none"``). Each has a
functional form (``kl``, ``ptloss``, ...) and an ``nn.Module`` form holding its
hyper-parameters; :func:`build_loss` builds a Module from its registry name (torchdistill style),
so a config can switch between PTLoss and the paper's baselines.

Why the numerics look the way they do:

* ``log q = log_softmax(logits)`` is always taken in float32 (float64 when the logits are
  float64), also under bf16/fp16 autocast, and the result is float32: half precision loses the
  small differences between teacher and student that distillation is about. Only elementwise
  ops and reductions are used, which autocast leaves alone.
* KL is ``xlogy(p, p) - p * log q`` so that ``0 log 0 = 0`` (one-hot teachers), and
  ``1 - q`` is ``-expm1(log q)``, accurate when ``q`` is close to 1. Gradients stay finite for
  one-hot teachers and logits of magnitude 1e4.
* PTLoss uses a fused autograd Function with the analytic gradient of docs/method.md §2.3
  (``g = q * sum(p + h) - (p + h)``, ``h_c = p_c q_c phi_c``) and Horner's rule for the
  polynomials: plain autograd through the M powers made forward+backward about 2x (C=3) and 5x
  or more (C=100) slower than KL at B=256 on CPU; fused, about 1.4x for the Module, which caches
  the coefficients, and 1.5x for the functional form (``benchmarks/bench_losses.py``). The loss
  value is computed exactly as docs/method.md §2.2 (KDD'24 Eq. (7)) writes it.

Teacher probabilities are targets: no gradient flows into them. ``labels`` are accepted by every
loss for a uniform interface and validated, but not used: distillation runs on unlabeled data.

Inputs may be torch tensors, numpy arrays or (nested) lists (:func:`ptdistill.arrays.as_tensor`):
logits given as a tensor keep their autograd graph; arrays and lists are moved to the logits'
device. Every loss returns a torch tensor: a 0-dim one for ``"mean"``/``"sum"``, shape (B,) for
``"none"``, float32 (float64 when the logits are float64) on the logits' device, in nats.
Bad input raises ValueError naming the argument: logits not floating-point or not of the teacher's
shape (B, C), teacher rows that are not probabilities (:func:`ptdistill.checks.check_probs`),
labels outside [0, C), a hyper-parameter out of range or not finite, an unknown reduction.

Sources: PTLoss is docs/method.md §2 (KDD'24 Eq. (7)); the baselines are §3 (KDD'24 §5.2).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ptdistill.arrays import ArrayLike, as_tensor
from ptdistill.checks import check_eps, check_labels, check_probs, finite_real, int_at_least

__all__ = [
    "LOSSES",
    "AnnealingKDLoss",
    "FloodingLoss",
    "FocalLoss",
    "KLLoss",
    "LabelSmoothingLoss",
    "PTLoss",
    "annealing_factor",
    "annealing_kd",
    "build_loss",
    "flooding",
    "focal",
    "kl",
    "label_smoothing",
    "ptloss",
    "register_loss",
]

REDUCTIONS = ("mean", "sum", "none")
#: Teacher probabilities are clamped here before taking logs in Annealing KD (one-hot teachers).
MIN_TEACHER_PROB = 1e-8


# ----------------------------------------------------------------------------- validation


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {', '.join(REDUCTIONS)}, got {reduction!r}")




def _inputs(
    student_logits: ArrayLike, teacher_probs: ArrayLike, labels: ArrayLike | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The three inputs of a loss as checked tensors (:func:`~ptdistill.arrays.as_tensor`).

    Tensors pass unchanged (the student's logits keep their graph); arrays and lists become
    tensors on the logits' device. Raises ValueError naming the argument.
    """
    student_logits = as_tensor("student_logits", student_logits)
    teacher_probs = as_tensor("teacher_probs", teacher_probs, student_logits.device)
    labels = None if labels is None else as_tensor("labels", labels, student_logits.device)
    check_probs("teacher_probs", teacher_probs)
    if not student_logits.dtype.is_floating_point:
        raise ValueError(f"student_logits: expected a floating-point tensor, got {student_logits.dtype}")
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(
            f"student_logits: expected shape (B, C) = {tuple(teacher_probs.shape)} to match teacher_probs,"
            f" got {tuple(student_logits.shape)}"
        )
    if labels is not None:
        check_labels("labels", labels, teacher_probs.shape[0], teacher_probs.shape[1])
    return student_logits, teacher_probs, labels


# ----------------------------------------------------------------------------- shared pieces


def _compute_dtype(student_logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if student_logits.dtype == torch.float64 else torch.float32


def _tempered(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student logits / T and teacher probabilities softmax(log p / T), in the compute dtype."""
    dtype = _compute_dtype(student_logits)
    logits = student_logits.to(dtype)
    probs = teacher_probs.detach().to(dtype)
    if temperature != 1.0:
        logits = logits / temperature
        probs = torch.softmax(torch.log(probs) / temperature, -1)
    return logits, probs


def _kl_rows(probs: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p || q) with 0 log 0 = 0."""
    return (torch.xlogy(probs, probs) - probs * log_q).sum(-1)


def _reduce(rows: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    return rows


def _horner(coefs: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """sum_k coefs[k] * x**k, each ``coefs[k]`` of shape (C,) broadcast over the rows of ``x``."""
    acc = coefs[-1]
    for c in reversed(coefs[:-1]):
        acc = torch.addcmul(c, acc, x)
    return acc


@functools.lru_cache(maxsize=None)
def _pt_signs(order: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns (-1)**m and -m * (-1)**m for m = 1..order (see ``_PTLossRows``)."""
    m = torch.arange(1, order + 1, dtype=dtype, device=device)[:, None]
    sign = 1 - 2 * (m % 2)
    return sign, -m * sign


def _pt_coefficients(eps: torch.Tensor, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Horner coefficients ``(coef, dcoef)`` of ``_PTLossRows`` for ``eps`` (C, M), each (M, C)."""
    sign, dsign = _pt_signs(eps.shape[1], dtype, device)
    eps_t = eps.detach().to(device=device, dtype=dtype).t().contiguous()  # contiguous rows broadcast fast
    return eps_t * sign, eps_t * dsign


class _PTLossRows(torch.autograd.Function):
    """Per-example PTLoss of ``logits`` against ``probs``, with the analytic gradient.

    Polynomials in ``e = expm1(log q) = -(1 - q)``, by Horner:
    ``sum_m eps[c,m] (1-q_c)**m = e * A_c(e)`` with coefficients ``coef[m,c] = eps[c,m] (-1)**m``
    (of e**(m-1); shape (M, C)), and ``phi_c = sum_m eps[c,m] m (1-q_c)**(m-1)`` with
    ``dcoef = -m coef``.
    The gradient wrt the logits, ``q * sum(w) - w`` with ``w = p + p q phi``, is computed in the
    forward pass when ``need_grad`` (exact also for rows of p summing to 1 only up to rounding).
    """

    @staticmethod
    def forward(  # noqa: D102
        ctx, logits: torch.Tensor, probs: torch.Tensor, coef: torch.Tensor, dcoef: torch.Tensor, need_grad: bool
    ) -> torch.Tensor:
        log_q = torch.log_softmax(logits, -1)
        e = torch.expm1(log_q)
        target = torch.addcmul(log_q, e, _horner(coef.unbind(0), e), value=-1)  # log q - perturbation
        rows = (torch.xlogy(probs, probs) - probs * target).sum(-1)
        if need_grad:
            q = log_q.exp()
            w = torch.addcmul(probs, probs * q, _horner(dcoef.unbind(0), e))
            ctx.save_for_backward(torch.mul(q, w.sum(-1, keepdim=True)).sub_(w))
        return rows

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rows: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        (grad,) = ctx.saved_tensors
        return grad * grad_rows.unsqueeze(-1), None, None, None, None


def _ptloss_reduced(
    logits: torch.Tensor,
    probs: torch.Tensor,
    coef: torch.Tensor,
    dcoef: torch.Tensor,
    temperature: float,
    reduction: str,
) -> torch.Tensor:
    need_grad = logits.requires_grad and torch.is_grad_enabled()  # forward runs in no-grad mode
    rows = _PTLossRows.apply(logits, probs, coef, dcoef, need_grad)
    if temperature != 1.0:
        rows = rows * temperature**2
    return _reduce(rows, reduction)


# ----------------------------------------------------------------------------- functional forms


def kl(
    student_logits: ArrayLike,
    teacher_probs: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Hinton KD: ``T**2 * KL(softmax(log p_t / T) || softmax(z / T))``.

    docs/method.md §3.1 (Hinton et al. 2015; KDD'24 Eq. (3), (12)); ``temperature`` T > 0.
    """
    temperature = finite_real("temperature", temperature, low=0.0, low_open=True)
    _check_reduction(reduction)
    student_logits, teacher_probs, labels = _inputs(student_logits, teacher_probs, labels)
    logits, probs = _tempered(student_logits, teacher_probs, temperature)
    rows = _kl_rows(probs, torch.log_softmax(logits, -1))
    if temperature != 1.0:
        rows = rows * temperature**2
    return _reduce(rows, reduction)


def ptloss(
    student_logits: ArrayLike,
    teacher_probs: ArrayLike,
    eps: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """PTLoss (docs/method.md §2.2, KDD'24 Eq. (7)): ``KL(p_t || q) + sum_c p_t[c] sum_m eps[c, m] (1 - q[c])**m``.

    ``eps`` has shape (C, M) and gets no gradient; ValueError when it is not finite or has not C
    rows. With a temperature, teacher and student are tempered as in :func:`kl` and the whole loss
    is multiplied by ``T**2`` (docs/method.md §3.1). ``eps = 0`` is :func:`kl` (§2.5).
    """
    temperature = finite_real("temperature", temperature, low=0.0, low_open=True)
    _check_reduction(reduction)
    student_logits, teacher_probs, labels = _inputs(student_logits, teacher_probs, labels)
    eps = as_tensor("eps", eps, student_logits.device)
    check_eps("eps", eps, teacher_probs.shape[1])
    logits, probs = _tempered(student_logits, teacher_probs, temperature)
    coef, dcoef = _pt_coefficients(eps, logits.dtype, logits.device)
    return _ptloss_reduced(logits, probs, coef, dcoef, temperature, reduction)


def label_smoothing(
    student_logits: ArrayLike,
    teacher_probs: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    delta: float = 0.1,
    reduction: str = "mean",
) -> torch.Tensor:
    """KL from the smoothed teacher: ``KL((1 - delta) p_t + delta / C || q)``, ``delta`` in [0, 1].

    docs/method.md §3.2 (KDD'24 Eq. (14)-(15) for C classes); its PTLoss form is §2.5.
    """
    delta = finite_real("delta", delta, low=0.0, high=1.0)
    _check_reduction(reduction)
    student_logits, teacher_probs, labels = _inputs(student_logits, teacher_probs, labels)
    logits, probs = _tempered(student_logits, teacher_probs, 1.0)
    smoothed = probs * (1.0 - delta) + delta / probs.shape[1]
    return _reduce(_kl_rows(smoothed, torch.log_softmax(logits, -1)), reduction)


def focal(
    student_logits: ArrayLike,
    teacher_probs: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    gamma: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss on teacher targets, shifted by the teacher entropy so that gamma=0 is KL:
    ``sum_c p_t[c] (1 - q_c)**gamma (-log q_c) + sum_c p_t[c] log p_t[c]``, ``gamma >= 0``.

    docs/method.md §3.3 (KDD'24 Eq. (8)).
    """
    gamma = finite_real("gamma", gamma, low=0.0)
    _check_reduction(reduction)
    student_logits, teacher_probs, labels = _inputs(student_logits, teacher_probs, labels)
    logits, probs = _tempered(student_logits, teacher_probs, 1.0)
    log_q = torch.log_softmax(logits, -1)
    # 1 - q is clamped away from 0 so that d/du u**gamma (infinite at 0 for gamma < 1) stays finite.
    modulation = (-torch.expm1(log_q)).clamp_min(torch.finfo(log_q.dtype).tiny).pow(gamma)
    rows = (torch.xlogy(probs, probs) - probs * modulation * log_q).sum(-1)
    return _reduce(rows, reduction)


def flooding(
    student_logits: ArrayLike,
    teacher_probs: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    level: float = 0.05,
    reduction: str = "mean",
) -> torch.Tensor:
    """Flooding (Ishida et al. 2020) of the KL loss: ``|L - level| + level``.

    ``L`` is the reduced (mean or sum) KL, so the batch loss is flooded as in the paper; with
    ``reduction="none"`` the flood is applied to each example's KL separately. ``level >= 0``
    (nats). docs/method.md §3.4.
    """
    level = finite_real("level", level, low=0.0)
    _check_reduction(reduction)
    student_logits, teacher_probs, labels = _inputs(student_logits, teacher_probs, labels)
    logits, probs = _tempered(student_logits, teacher_probs, 1.0)
    loss = _reduce(_kl_rows(probs, torch.log_softmax(logits, -1)), reduction)
    return (loss - level).abs() + level


def annealing_factor(step: int, total_steps: int, max_temperature: int) -> float:
    """Phi(T) = 1 - (T - 1) / T_max of Annealing KD, T going from T_max down to 1.

    The ``total_steps`` steps are split into ``max_temperature`` equal stages; stage k
    (0-based) uses T = T_max - k. From ``step >= total_steps`` on, Phi = 1. ValueError unless
    ``step >= 0``, ``total_steps >= 1`` and ``max_temperature >= 1`` are integers.
    docs/method.md §3.5.
    """
    step = int_at_least("step", step, 0)
    total_steps = int_at_least("total_steps", total_steps, 1)
    max_temperature = int_at_least("max_temperature", max_temperature, 1)
    if step >= total_steps:
        return 1.0
    temperature = max_temperature - step * max_temperature // total_steps
    return 1.0 - (temperature - 1) / max_temperature


def annealing_kd(
    student_logits: ArrayLike,
    teacher_probs: ArrayLike,
    *,
    step: int,
    total_steps: int,
    max_temperature: int,
    labels: ArrayLike | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Phase 1 of Annealing KD (Jafari et al. 2021): ``mean_c (z_s - Phi(T) z_t)**2`` per example.

    Teacher logits are recovered as ``log(max(p_t, 1e-8))``; student and teacher logits are
    centred (class mean subtracted) because logits are defined up to a shift. ``Phi`` follows
    :func:`annealing_factor`. Labels are not used: the distillation set is unlabeled (the
    paper's phase 2, fine-tuning on labels, is not part of this loss). docs/method.md §3.5.
    """
    phi = annealing_factor(step, total_steps, max_temperature)
    _check_reduction(reduction)
    student_logits, teacher_probs, labels = _inputs(student_logits, teacher_probs, labels)
    logits, probs = _tempered(student_logits, teacher_probs, 1.0)
    teacher_logits = torch.log(probs.clamp_min(MIN_TEACHER_PROB))
    student = logits - logits.mean(-1, keepdim=True)
    teacher = teacher_logits - teacher_logits.mean(-1, keepdim=True)
    return _reduce((student - phi * teacher).square().mean(-1), reduction)


# ----------------------------------------------------------------------------- registry

LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a loss Module to :data:`LOSSES` under ``name``; ValueError if ``name`` is taken."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in LOSSES:
            raise ValueError(f"name: loss {name!r} is already registered")
        LOSSES[name] = cls
        return cls

    return add


def build_loss(name: str, **hparams: object) -> nn.Module:
    """Build the registered loss ``name`` with its hyper-parameters, e.g.
    ``build_loss("ptloss", eps=[[0.1], [0.2]], temperature=2.0)``.

    ValueError for an unknown name, an unknown or missing hyper-parameter, or a bad value.
    """
    if name not in LOSSES:
        raise ValueError(f"name: unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}")
    params = dict(inspect.signature(LOSSES[name]).parameters)
    unknown = sorted(set(hparams) - set(params))
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)}: unknown hyper-parameter(s) of loss {name!r};"
            f" valid: {', '.join(params) or 'none'}"
        )
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in hparams]
    if missing:
        raise ValueError(f"{', '.join(missing)}: required hyper-parameter(s) of loss {name!r} missing")
    return LOSSES[name](**hparams)


class _DistillLoss(nn.Module):
    """Base: holds ``reduction``; subclasses implement ``forward(student_logits, teacher_probs, labels=None)``."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction


@register_loss("kl")
class KLLoss(_DistillLoss):
    """Module form of :func:`kl`."""

    def __init__(self, temperature: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = finite_real("temperature", temperature, low=0.0, low_open=True)

    def forward(  # noqa: D102
        self, student_logits: ArrayLike, teacher_probs: ArrayLike, labels: ArrayLike | None = None
    ) -> torch.Tensor:
        return kl(student_logits, teacher_probs, labels=labels, temperature=self.temperature, reduction=self.reduction)

    def extra_repr(self) -> str:  # noqa: D102
        return f"temperature={self.temperature}, reduction={self.reduction!r}"


@register_loss("ptloss")
class PTLoss(_DistillLoss):
    """Module form of :func:`ptloss`; ``eps`` (C, M) (tensor, array or nested list) is a buffer.

    The Horner coefficients derived from ``eps`` are cached, and rebuilt (with ``eps``
    re-validated) when ``eps`` is replaced or moved (``.to``), changed in place, or the logits'
    compute dtype or device changes.
    """

    eps: torch.Tensor

    def __init__(
        self,
        eps: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
        temperature: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.temperature = finite_real("temperature", temperature, low=0.0, low_open=True)
        # Lists become float64 as numpy reads them (as in the functional form), not torch's float32
        # default: the coefficients are cast to the logits' dtype where they are used.
        try:
            tensor = as_tensor("eps", eps)
        except ValueError as err:
            raise ValueError(f"eps: expected a (C, M) array of numbers, got {type(eps).__name__}: {err}") from None
        if not tensor.dtype.is_floating_point:
            tensor = tensor.to(torch.float64)
        if tensor.ndim != 2:
            raise ValueError(f"eps: expected shape (C, M), got {tuple(tensor.shape)}")
        check_eps("eps", tensor, tensor.shape[0])
        self.register_buffer("eps", tensor.detach().clone())
        self._cache: tuple[torch.Tensor, tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    def forward(  # noqa: D102
        self, student_logits: ArrayLike, teacher_probs: ArrayLike, labels: ArrayLike | None = None
    ) -> torch.Tensor:
        student_logits, teacher_probs, labels = _inputs(student_logits, teacher_probs, labels)
        num_classes = teacher_probs.shape[1]
        if self.eps.shape[0] != num_classes:
            raise ValueError(
                f"eps: has {self.eps.shape[0]} rows (one per class) but the inputs have C={num_classes} classes"
            )
        logits, probs = _tempered(student_logits, teacher_probs, self.temperature)
        key = (self.eps._version, logits.dtype, logits.device)
        cache = self._cache  # (the eps tensor it was built from, key, coefficients)
        if cache is None or cache[0] is not self.eps or cache[1] != key:
            check_eps("eps", self.eps, num_classes)
            cache = self._cache = (self.eps, key, _pt_coefficients(self.eps, logits.dtype, logits.device))
        coef, dcoef = cache[2]
        return _ptloss_reduced(logits, probs, coef, dcoef, self.temperature, self.reduction)

    def extra_repr(self) -> str:  # noqa: D102
        return f"eps_shape={tuple(self.eps.shape)}, temperature={self.temperature}, reduction={self.reduction!r}"


@register_loss("label_smoothing")
class LabelSmoothingLoss(_DistillLoss):
    """Module form of :func:`label_smoothing`."""

    def __init__(self, delta: float = 0.1, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.delta = finite_real("delta", delta, low=0.0, high=1.0)

    def forward(  # noqa: D102
        self, student_logits: ArrayLike, teacher_probs: ArrayLike, labels: ArrayLike | None = None
    ) -> torch.Tensor:
        return label_smoothing(student_logits, teacher_probs, labels=labels, delta=self.delta, reduction=self.reduction)

    def extra_repr(self) -> str:  # noqa: D102
        return f"delta={self.delta}, reduction={self.reduction!r}"


@register_loss("focal")
class FocalLoss(_DistillLoss):
    """Module form of :func:`focal`."""

    def __init__(self, gamma: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.gamma = finite_real("gamma", gamma, low=0.0)

    def forward(  # noqa: D102
        self, student_logits: ArrayLike, teacher_probs: ArrayLike, labels: ArrayLike | None = None
    ) -> torch.Tensor:
        return focal(student_logits, teacher_probs, labels=labels, gamma=self.gamma, reduction=self.reduction)

    def extra_repr(self) -> str:  # noqa: D102
        return f"gamma={self.gamma}, reduction={self.reduction!r}"


@register_loss("flooding")
class FloodingLoss(_DistillLoss):
    """Module form of :func:`flooding` (flood ``level`` over the reduced KL; per example for "none")."""

    def __init__(self, level: float = 0.05, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.level = finite_real("level", level, low=0.0)

    def forward(  # noqa: D102
        self, student_logits: ArrayLike, teacher_probs: ArrayLike, labels: ArrayLike | None = None
    ) -> torch.Tensor:
        return flooding(student_logits, teacher_probs, labels=labels, level=self.level, reduction=self.reduction)

    def extra_repr(self) -> str:  # noqa: D102
        return f"level={self.level}, reduction={self.reduction!r}"


@register_loss("annealing_kd")
class AnnealingKDLoss(_DistillLoss):
    """Module form of :func:`annealing_kd`; the training loop calls :meth:`set_step` each step.

    Labels are not used: the distillation set is unlabeled.
    """

    def __init__(self, max_temperature: int, total_steps: int, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.max_temperature = int_at_least("max_temperature", max_temperature, 1)
        self.total_steps = int_at_least("total_steps", total_steps, 1)
        self.step = 0

    def set_step(self, step: int) -> None:
        """Set the training step that selects the annealing temperature."""
        self.step = int_at_least("step", step, 0)

    @property
    def factor(self) -> float:
        """The current Phi(T)."""
        return annealing_factor(self.step, self.total_steps, self.max_temperature)

    def forward(  # noqa: D102
        self, student_logits: ArrayLike, teacher_probs: ArrayLike, labels: ArrayLike | None = None
    ) -> torch.Tensor:
        return annealing_kd(
            student_logits,
            teacher_probs,
            step=self.step,
            total_steps=self.total_steps,
            max_temperature=self.max_temperature,
            labels=labels,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"max_temperature={self.max_temperature}, total_steps={self.total_steps}, step={self.step},"
            f" reduction={self.reduction!r}"
        )
