"""Coefficient search: pick the PTLoss coefficients whose proxy teacher scores best on D_v (docs/method.md §6).

Strategies live in a registry and are selected by name:

- ``random`` is the paper's Algorithm 1 exactly: for M = 1..max_order draw ``trials`` sets
  with every eps[c, m] ~ U[low, high] from ``numpy.random.default_rng(seed)`` in the same
  order as the paper-style reference, score each, keep the global argmin (first on ties).
- ``implicit`` runs the same random search, then refines the best ``starts`` candidates of
  every order by projected Adam on the criterion itself, its gradient through the proxy
  teacher obtained by implicit differentiation.  Random search needs exponentially many
  draws as C * M grows; a gradient step moves all C * M coefficients at once.

Two guards against a choice that fits the validation split's noise (a proxy teacher that
contradicts the teacher it stands for, then a student collapsed onto one class):

- every candidate's ``flips``, the fraction of validation rows whose proxy argmax differs from
  the teacher's, is in the table; a candidate with ``flips > max_flips`` (default 0.5: it
  overturns most of the teacher's decisions) is not eligible to be chosen. Where no candidate
  is eligible the criterion alone decides, with a warning. ``max_flips=1`` turns the rule off.
- a validation split with fewer than :data:`MIN_ROWS_PER_CLASS` rows in some class gets a
  warning naming every class's count: candidates' scores then differ by less than their
  sampling noise (a few rows decide the ranking).

Warnings go to :mod:`warnings` and to ``SearchResult.warnings``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ptdistill.arrays import ArrayLike, as_tensor
from ptdistill.checks import check_labels, normalize_probs
from ptdistill.proxy.criteria import CRITERIA, get_criterion
from ptdistill.proxy.solver import proxy_teacher_differentiable, solve_proxy

#: Entries (candidates x examples x classes) solved in one call, to bound memory.
_BATCH_ENTRIES = 1 << 23
#: Fewer validation rows than this in a class: the search warns that it cannot rank candidates.
#: (30 is the usual rule of thumb for a mean to be near-normal; the criterion is a mean over rows.)
MIN_ROWS_PER_CLASS = 30


@dataclass
class SearchResult:
    """The chosen coefficients and every candidate that was scored.

    ``eps`` (C, order) numpy float64; ``score`` its criterion value; ``flips`` the fraction of
    validation rows whose proxy argmax differs from the teacher's; ``table`` (pandas) one row per
    scored candidate with its order, source, all criteria, ``flips``, ``eligible`` (flips <=
    max_flips), convergence and coefficients (lists); ``seconds`` the search's wall-clock time;
    ``settings`` the search's arguments; ``warnings`` what the search warned about.
    """

    eps: np.ndarray
    order: int
    score: float
    criterion: str
    strategy: str
    table: pd.DataFrame
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    flips: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the choice, the settings and the candidate table."""
        return {
            "eps": self.eps.tolist(),
            "order": self.order,
            "score": self.score,
            "flips": self.flips,
            "criterion": self.criterion,
            "strategy": self.strategy,
            "seconds": self.seconds,
            "settings": self.settings,
            "warnings": self.warnings,
            "candidates": self.table.to_dict(orient="records"),
        }


@dataclass
class _Scored:
    """Candidates of one order and their scores."""

    eps: torch.Tensor  # (K, C, M)
    scores: dict[str, torch.Tensor]  # criterion name -> (K,)
    flips: torch.Tensor  # (K,) fraction of rows whose proxy argmax differs from the teacher's
    converged: torch.Tensor  # (K,) fraction of examples converged
    max_grad: torch.Tensor  # (K,)


def flip_fraction(proxy_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose argmax differs: proxy (..., N, C) against teacher (N, C) -> (...) float64.

    Ties go to the lowest class index on both sides (torch's argmax).
    """
    return (proxy_probs.argmax(-1) != teacher_probs.argmax(-1)).double().mean(-1)


def _scored(eps: torch.Tensor, sol, teacher: torch.Tensor, labels: torch.Tensor) -> _Scored:
    """Every criterion, the flips and the convergence summary of candidates ``eps`` solved as ``sol``."""
    return _Scored(eps, {name: fn(sol.probs, labels).detach() for name, fn in CRITERIA.items()},
                   flip_fraction(sol.probs, teacher), sol.converged.double().mean(-1), sol.max_grad.amax(-1))


def _score(teacher: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor, on_batch: Callable[[int], None]) -> _Scored:
    """Solve and score candidates eps (K, C, M) in memory-bounded batches."""
    n, c = teacher.shape
    per = max(1, _BATCH_ENTRIES // (n * c))
    parts: list[_Scored] = []
    for lo in range(0, eps.shape[0], per):
        sol = solve_proxy(teacher, eps[lo : lo + per])
        parts.append(_scored(eps[lo : lo + per], sol, teacher, labels))
        on_batch(parts[-1].eps.shape[0])
    return _Scored(
        torch.cat([x.eps for x in parts]),
        {k: torch.cat([x.scores[k] for x in parts]) for k in CRITERIA},
        torch.cat([x.flips for x in parts]),
        torch.cat([x.converged for x in parts]),
        torch.cat([x.max_grad for x in parts]),
    )


def _rows(scored: _Scored, source: str) -> list[dict[str, Any]]:
    k, _, m = scored.eps.shape
    return [
        {
            "order": m,
            "source": source,
            **{name: float(v[i]) for name, v in scored.scores.items()},
            "flips": float(scored.flips[i]),
            "converged": float(scored.converged[i]),
            "max_grad": float(scored.max_grad[i]),
            "eps": scored.eps[i].tolist(),
        }
        for i in range(k)
    ]


def _random(teacher, labels, *, max_order, trials, low, high, seed, criterion, bar, **_) -> list[_Scored]:
    """Algorithm 1: ``trials`` uniform draws per order, one generator for the whole search."""
    rng = np.random.default_rng(seed)
    c = teacher.shape[1]
    out = []
    for m in range(1, max_order + 1):
        # One (trials, C, M) draw consumes the stream exactly like `trials` draws of (C, M).
        eps = torch.from_numpy(rng.uniform(low, high, size=(trials, c, m))).to(teacher.device)
        out.append(_score(teacher, labels, eps, bar.update))
    return out


def _implicit(
    teacher, labels, *, max_order, trials, low, high, seed, criterion, bar, starts, steps, lr, **_
) -> list[_Scored]:
    """Algorithm 1, then projected Adam from the best ``starts`` draws of each order.

    Each start keeps the best point on its path; the solver is warm-started from the
    previous step's solution, so a step costs a few Newton iterations.
    """
    found = _random(teacher, labels, max_order=max_order, trials=trials, low=low, high=high, seed=seed,
                    criterion=criterion, bar=bar)
    score_fn = get_criterion(criterion)
    refined = []
    for scored in found:
        top = torch.argsort(scored.scores[criterion])[:starts]
        eps = scored.eps[top].clone().requires_grad_(True)
        best_eps, best = eps.detach().clone(), scored.scores[criterion][top].clone()
        opt = torch.optim.Adam([eps], lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        init = None
        for step in range(steps + 1):
            probs, sol = proxy_teacher_differentiable(teacher, eps, init)
            init = sol.logits
            value = score_fn(probs, labels)
            better = value.detach() < best
            best_eps[better], best = eps.detach()[better], torch.where(better, value.detach(), best)
            if step == steps:
                break
            opt.zero_grad()
            value.sum().backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                eps.clamp_(low, high)
            bar.update(1)
        final = solve_proxy(teacher, best_eps)
        refined.append(_scored(best_eps, final, teacher, labels))
    return found + refined


STRATEGIES: dict[str, Callable[..., list[_Scored]]] = {"random": _random, "implicit": _implicit}


def search(
    teacher_probs: ArrayLike,
    labels: ArrayLike,
    max_order: int = 5,
    trials: int = 100,
    low: float = -1.0,
    high: float = 10.0,
    seed: int = 0,
    strategy: str = "random",
    criterion: str = "q",
    *,
    max_flips: float = 0.5,
    class_names: Sequence[str] | None = None,
    starts: int = 4,
    steps: int = 30,
    lr: float = 0.3,
    progress: bool = False,
) -> SearchResult:
    """Search PTLoss coefficients on labeled validation data.

    teacher_probs (N, C) teacher probabilities on D_v, labels (N,) class indices: tensors, numpy
    arrays or lists, in any float dtype; rows within a bfloat16 softmax's 7.8e-3 of 1 are
    renormalised in float64 (:func:`ptdistill.checks.normalize_probs`).  ``starts``, ``steps`` and ``lr`` configure the ``implicit`` strategy;
    ``class_names`` (one per class) name the classes in warnings.
    Returns the best eligible candidate (``flips <= max_flips``; first on ties) by ``criterion``,
    as a :class:`SearchResult` whose ``eps`` is a numpy float64 array (C, order), ready for
    ``build_loss("ptloss", eps=result.eps)``.  Raises ValueError for bad input or settings.
    Source: docs/method.md §6 (``random`` is KDD'24 Algorithm 1, §4.3; defaults from KDD'24 §5.2
    and Table 4); ``max_flips`` is the project's guard (§6.3).
    """
    teacher_probs = as_tensor("teacher_probs", teacher_probs)
    labels = as_tensor("labels", labels, teacher_probs.device)
    teacher_probs = normalize_probs("teacher_probs", teacher_probs)  # fp16/bf16-rounded rows accepted
    check_labels("labels", labels, *teacher_probs.shape)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: unknown {strategy!r}; expected one of {sorted(STRATEGIES)}")
    get_criterion(criterion)
    for name, value, least in (("max_order", max_order, 1), ("trials", trials, 1), ("starts", starts, 1),
                               ("steps", steps, 1)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name}: expected an integer >= {least}, got {value!r}")
    if not low < high:
        raise ValueError(f"low/high: expected low < high, got low={low}, high={high}")
    if not 0 <= max_flips <= 1:
        raise ValueError(f"max_flips: expected a fraction in [0, 1], got {max_flips!r}")
    if strategy == "implicit" and starts > trials:
        raise ValueError(f"starts: expected at most trials={trials}, got {starts}")
    settings = dict(max_order=max_order, trials=trials, low=low, high=high, seed=seed, strategy=strategy,
                    criterion=criterion, max_flips=max_flips)
    if strategy == "implicit":
        settings.update(starts=starts, steps=steps, lr=lr)
    teacher = teacher_probs.detach().to(torch.float64)
    labels = labels.to(teacher.device)
    notes = [note for note in [small_split_warning(labels, teacher.shape[1], class_names)] if note]
    t0 = time.perf_counter()
    total = max_order * (trials + (steps if strategy == "implicit" else 0))
    with tqdm(total=total, desc=f"proxy search ({strategy})", unit="cand", disable=not progress) as bar:
        found = STRATEGIES[strategy](teacher, labels, max_order=max_order, trials=trials, low=low, high=high,
                                     seed=seed, criterion=criterion, bar=bar, starts=starts, steps=steps, lr=lr)
    seconds = time.perf_counter() - t0
    rows = []
    for i, scored in enumerate(found):
        source = "random" if i < max_order else "implicit"
        rows += _rows(scored, source)
    table = pd.DataFrame(rows)
    table.insert(0, "candidate", range(len(table)))
    table.insert(table.columns.get_loc("flips") + 1, "eligible", table["flips"] <= max_flips)
    scores = table[criterion].to_numpy()
    if table["eligible"].any():
        best = int(np.argmin(np.where(table["eligible"], scores, np.inf)))
    else:
        best = int(np.argmin(scores))
        notes.append(f"every candidate's proxy teacher flips more than max_flips={max_flips:g} of the teacher's"
                     f" validation decisions (fewest: {table['flips'].min():.2f}); chose by {criterion} alone")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    row = table.iloc[best]
    return SearchResult(
        eps=np.asarray(row["eps"], dtype=np.float64),
        order=int(row["order"]),
        score=float(row[criterion]),
        criterion=criterion,
        strategy=strategy,
        table=table,
        seconds=seconds,
        settings=settings,
        flips=float(row["flips"]),
        warnings=notes,
    )


def small_split_warning(labels: torch.Tensor, num_classes: int, class_names: Sequence[str] | None = None) -> str | None:
    """The warning for validation labels (N,) with fewer than MIN_ROWS_PER_CLASS rows in a class, else None."""
    counts = torch.bincount(labels.to(torch.int64), minlength=num_classes).tolist()
    if min(counts) >= MIN_ROWS_PER_CLASS:
        return None
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    per_class = ", ".join(f"class {name}: {n}" for name, n in zip(names, counts))
    return (f"validation split too small to rank coefficient candidates: {len(labels)} rows ({per_class}); "
            f"want at least {MIN_ROWS_PER_CLASS} per class, else a few rows decide which coefficients win")
