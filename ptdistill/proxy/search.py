"""Coefficient search: pick the PTLoss coefficients whose proxy teacher scores best on D_v.

Strategies live in a registry and are selected by name:

- ``random`` is the paper's Algorithm 1 exactly: for M = 1..max_order draw ``trials`` sets
  with every eps[c, m] ~ U[low, high] from ``numpy.random.default_rng(seed)`` in the same
  order as the paper-style reference, score each, keep the global argmin (first on ties).
- ``implicit`` runs the same random search, then refines the best ``starts`` candidates of
  every order by projected Adam on the criterion itself, its gradient through the proxy
  teacher obtained by implicit differentiation.  Random search needs exponentially many
  draws as C * M grows; a gradient step moves all C * M coefficients at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ptdistill.checks import check_labels, check_probs
from ptdistill.proxy.criteria import CRITERIA, get_criterion
from ptdistill.proxy.solver import proxy_teacher_differentiable, solve_proxy

#: Entries (candidates x examples x classes) solved in one call, to bound memory.
_BATCH_ENTRIES = 1 << 23


@dataclass
class SearchResult:
    """The chosen coefficients and every candidate that was scored.

    ``eps`` (C, order) float64; ``score`` its criterion value; ``table`` one row per scored
    candidate with its order, source, all criteria, convergence and coefficients.
    """

    eps: np.ndarray
    order: int
    score: float
    criterion: str
    strategy: str
    table: pd.DataFrame
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the choice, the settings and the candidate table."""
        return {
            "eps": self.eps.tolist(),
            "order": self.order,
            "score": self.score,
            "criterion": self.criterion,
            "strategy": self.strategy,
            "seconds": self.seconds,
            "settings": self.settings,
            "candidates": self.table.to_dict(orient="records"),
        }


@dataclass
class _Scored:
    """Candidates of one order and their scores."""

    eps: torch.Tensor  # (K, C, M)
    scores: dict[str, torch.Tensor]  # criterion name -> (K,)
    converged: torch.Tensor  # (K,) fraction of examples converged
    max_grad: torch.Tensor  # (K,)


def _scored(eps: torch.Tensor, sol, labels: torch.Tensor) -> _Scored:
    """Every criterion and the convergence summary of candidates ``eps`` solved as ``sol``."""
    return _Scored(eps, {name: fn(sol.probs, labels).detach() for name, fn in CRITERIA.items()},
                   sol.converged.double().mean(-1), sol.max_grad.amax(-1))


def _score(teacher: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor, on_batch: Callable[[int], None]) -> _Scored:
    """Solve and score candidates eps (K, C, M) in memory-bounded batches."""
    n, c = teacher.shape
    per = max(1, _BATCH_ENTRIES // (n * c))
    parts: list[_Scored] = []
    for lo in range(0, eps.shape[0], per):
        sol = solve_proxy(teacher, eps[lo : lo + per])
        parts.append(_scored(eps[lo : lo + per], sol, labels))
        on_batch(parts[-1].eps.shape[0])
    return _Scored(
        torch.cat([x.eps for x in parts]),
        {k: torch.cat([x.scores[k] for x in parts]) for k in CRITERIA},
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
        refined.append(_scored(best_eps, final, labels))
    return found + refined


STRATEGIES: dict[str, Callable[..., list[_Scored]]] = {"random": _random, "implicit": _implicit}


def search(
    teacher_probs: torch.Tensor,
    labels: torch.Tensor,
    max_order: int = 5,
    trials: int = 100,
    low: float = -1.0,
    high: float = 10.0,
    seed: int = 0,
    strategy: str = "random",
    criterion: str = "q",
    *,
    starts: int = 4,
    steps: int = 30,
    lr: float = 0.3,
    progress: bool = False,
) -> SearchResult:
    """Search PTLoss coefficients on labeled validation data.

    teacher_probs (N, C) teacher probabilities on D_v, labels (N,).  ``starts``, ``steps``
    and ``lr`` configure the ``implicit`` strategy.  Returns the global best over every
    scored candidate (first on ties), by ``criterion``.
    """
    check_probs("teacher_probs", teacher_probs)
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
    if strategy == "implicit" and starts > trials:
        raise ValueError(f"starts: expected at most trials={trials}, got {starts}")
    settings = dict(max_order=max_order, trials=trials, low=low, high=high, seed=seed, strategy=strategy,
                    criterion=criterion)
    if strategy == "implicit":
        settings.update(starts=starts, steps=steps, lr=lr)
    teacher = teacher_probs.detach().to(torch.float64)
    labels = labels.to(teacher.device)
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
    best = int(np.argmin(table[criterion].to_numpy()))
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
    )
