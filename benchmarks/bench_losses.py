"""Forward+backward time per call of PTLoss (M=5, random eps) vs KL at B=256, C in {3, 100}.

Prints one JSON object. Times are in microseconds: the median over many repeats after a
warm-up (the headline) and the minimum (less sensitive to other processes on the machine).
All variants are timed alternately, call by call, so that they see the same machine load.
"module" is the form a training loop uses (``build_loss("ptloss", eps=...)``, coefficients
cached); "functional" is ``ptloss(z, p, eps)`` (eps validated and prepared on every call).
Both include input validation. CUDA times are reported when a GPU is available, else null.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from ptdistill.losses import build_loss, kl, ptloss

BATCH = 256
CLASSES = (3, 100)
ORDER = 5
WARMUP = 50
REPEATS = 1000


def _case(num_classes: int, device: str) -> dict[str, Callable[[], None]]:
    gen = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(BATCH, num_classes, generator=gen).to(device).requires_grad_()
    teacher = torch.softmax(2 * torch.randn(BATCH, num_classes, generator=gen), -1).to(device)
    eps = torch.empty(num_classes, ORDER).uniform_(-1, 10, generator=gen).to(device)
    kl_module = build_loss("kl").to(device)
    pt_module = build_loss("ptloss", eps=eps).to(device)
    losses = {
        "kl_module": lambda: kl_module(logits, teacher),
        "ptloss_module": lambda: pt_module(logits, teacher),
        "kl_functional": lambda: kl(logits, teacher),
        "ptloss_functional": lambda: ptloss(logits, teacher, eps),
    }

    def step(loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            logits.grad = None
            loss().backward()

        return run

    return {name: step(loss) for name, loss in losses.items()}


def _time(fns: dict[str, Callable[[], None]], sync: Callable[[], None]) -> dict[str, tuple[float, float]]:
    for fn in fns.values():
        for _ in range(WARMUP):
            fn()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(REPEATS):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - start)
    return {name: (statistics.median(s) * 1e6, min(s) * 1e6) for name, s in samples.items()}


def _bench(device: str, sync: Callable[[], None]) -> dict[str, dict[str, dict[str, float]]]:
    out = {}
    for num_classes in CLASSES:
        t = _time(_case(num_classes, device), sync)
        out[f"C={num_classes}"] = {
            form: {
                "kl_us": round(t[f"kl_{form}"][0], 1),
                "ptloss_us": round(t[f"ptloss_{form}"][0], 1),
                "ratio": round(t[f"ptloss_{form}"][0] / t[f"kl_{form}"][0], 3),
                "kl_min_us": round(t[f"kl_{form}"][1], 1),
                "ptloss_min_us": round(t[f"ptloss_{form}"][1], 1),
                "ratio_of_min": round(t[f"ptloss_{form}"][1] / t[f"kl_{form}"][1], 3),
            }
            for form in ("module", "functional")
        }
    return out


def main() -> None:
    """Run the benchmark and print the JSON result."""
    result = {
        "batch": BATCH,
        "order": ORDER,
        "repeats": REPEATS,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "load_average_before": round(os.getloadavg()[0], 2),
        "cpu": _bench("cpu", lambda: None),
        "cuda": _bench("cuda", torch.cuda.synchronize) if torch.cuda.is_available() else None,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
