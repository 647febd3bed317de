"""Proxy-teacher solver and coefficient search against the paper-style fsolve reference.

Prints one JSON object:
- ``paper_size``: per-example solve time of ``ptdistill`` (the whole Algorithm 1 at N=1,000,
  C=3, orders 1-5, 100 trials = 500,000 solves) vs the reference timed in the same process
  on a subset of the same candidates, and the speed-up; convergence of both;
- ``cifar100_size``: Algorithm 1 at N=1,000, C=100, orders 1-5, 100 trials (target < 60 s);
- ``strategies``: the best Q of ``implicit`` vs ``random`` search given the same wall-clock;
- ``cuda``: the paper-size and C=100 runs on a GPU when one is present, else null.

Usage: python benchmarks/bench_proxy.py [--reference-solves 3000] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

from ptdistill.proxy import search, solve_proxy
from ptdistill.synthetic import noisy_teacher

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "proxy_fsolve.py"


def _reference():
    spec = importlib.util.spec_from_file_location("proxy_fsolve", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _draws(c: int, max_order: int, trials: int, seed: int = 0) -> list[np.ndarray]:
    """The candidates Algorithm 1 draws, order by order (as the reference does)."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.0, 10.0, size=(trials, c, m)) for m in range(1, max_order + 1)]


def paper_size(ref, n: int, trials: int, reference_solves: int, device: str) -> dict:
    teacher, labels = noisy_teacher(n, 3)
    teacher = teacher.to(device)
    t0 = time.perf_counter()
    result = search(teacher, labels.to(device), max_order=5, trials=trials)
    ours = time.perf_counter() - t0
    solves = n * 5 * trials
    out = {"n": n, "classes": 3, "orders": 5, "trials": trials, "solves": solves,
           "ptdistill_seconds": round(ours, 3), "ptdistill_us_per_example": round(ours / solves * 1e6, 3),
           "ptdistill_converged_fraction": float(result.table["converged"].mean()), "best_q": result.score}
    if ref is None:
        return out
    # The reference on the first examples of every order's first candidates, same process.
    p = teacher.cpu().numpy()
    per_order = max(1, reference_solves // (5 * n)) if reference_solves >= 5 * n else 1
    rows = min(n, max(1, reference_solves // (5 * per_order)))
    t0, done, conv = time.perf_counter(), 0, 0
    for eps_m in _draws(3, 5, trials):
        for eps in eps_m[:per_order]:
            for i in range(rows):
                q = ref.solve_proxy(p[i], eps)
                conv += int(np.abs(ref.grad_full(np.log(np.clip(q, 1e-300, 1)), p[i], eps)).max() <= 1e-8)
                done += 1
    ref_s = time.perf_counter() - t0
    out.update(reference_solves=done, reference_seconds=round(ref_s, 3),
               reference_us_per_example=round(ref_s / done * 1e6, 1),
               reference_converged_fraction=conv / done,
               speedup=round((ref_s / done) / (ours / solves), 1),
               reference_estimated_seconds_full=round(ref_s / done * solves, 1))
    return out


def cifar100_size(n: int, trials: int, device: str) -> dict:
    teacher, labels = noisy_teacher(n, 100)
    t0 = time.perf_counter()
    result = search(teacher.to(device), labels.to(device), max_order=5, trials=trials)
    return {"n": n, "classes": 100, "orders": 5, "trials": trials, "seconds": round(time.perf_counter() - t0, 2),
            "converged_fraction": float(result.table["converged"].mean()), "best_q": result.score,
            "best_order": result.order}


def strategies(c: int, n: int, trials: int, steps: int, seeds: list[int]) -> dict:
    """Implicit search vs random search given the same wall-clock, over several seeds."""
    rows = []
    for seed in seeds:
        teacher, labels = noisy_teacher(n, c, seed=100 + seed)
        t0 = time.perf_counter()
        imp = search(teacher, labels, max_order=5, trials=trials, strategy="implicit", steps=steps, seed=seed)
        t_imp = time.perf_counter() - t0
        # Random search with as many draws as fit in the same time (timed from a first run).
        t0 = time.perf_counter()
        search(teacher, labels, max_order=5, trials=trials, seed=seed)
        per_trial = (time.perf_counter() - t0) / trials
        eq_trials = max(trials, int(t_imp / per_trial))
        t0 = time.perf_counter()
        rnd = search(teacher, labels, max_order=5, trials=eq_trials, seed=seed)
        t_rnd = time.perf_counter() - t0
        rows.append({"seed": seed, "implicit_q": imp.score, "implicit_seconds": round(t_imp, 2),
                     "random_q": rnd.score, "random_trials": eq_trials, "random_seconds": round(t_rnd, 2)})
    return {"classes": c, "n": n, "implicit_trials": trials, "implicit_steps": steps, "runs": rows,
            "implicit_wins": sum(r["implicit_q"] < r["random_q"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference-solves", type=int, default=3000)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    a = ap.parse_args()
    ref = _reference() if REFERENCE.exists() else None
    trials = 10 if a.quick else 100
    out = {
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__},
        "paper_size": paper_size(ref, 1000, trials, a.reference_solves, "cpu"),
        "cifar100_size": cifar100_size(1000, 10 if a.quick else 100, "cpu"),
        "strategies": [strategies(3, 1000, 20, 30, [0, 1, 2] if not a.quick else [0]),
                       strategies(100, 1000, 10, 30, [0] if a.quick else [0, 1])],
        "cuda": None,
    }
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        solve_proxy(noisy_teacher(10, 3)[0].cuda(), torch.zeros(3, 1, device="cuda"))  # warm-up
        out["cuda"] = {"device": torch.cuda.get_device_name(),
                       "paper_size": paper_size(None, 1000, trials, 0, "cuda"),
                       "cifar100_size": cifar100_size(1000, trials, "cuda")}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
