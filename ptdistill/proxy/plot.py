"""Teacher vs proxy teacher, drawn: what the chosen coefficients do to the teacher."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ptdistill.metrics import reliability  # noqa: E402


def plot_proxy(
    teacher_probs: torch.Tensor,
    proxy_probs: torch.Tensor,
    labels: torch.Tensor,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Save a PNG with two panels and return its path (parent folders are created).

    ``teacher_probs`` and ``proxy_probs`` (N, C), ``labels`` (N,) integer classes; any float dtype
    and device (drawn in float64 on the CPU).

    Left: per-class probability shift from the teacher to the proxy teacher (where the
    perturbation moves mass), next to how far the teacher's mean is from the label frequency.  Right: reliability diagram of both, with
    their ECE (whether the proxy teacher is better calibrated than the teacher).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    teacher, proxy = teacher_probs.detach().double().cpu(), proxy_probs.detach().double().cpu()
    labels = labels.detach().cpu()
    c = teacher.shape[1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    classes = np.arange(c)
    freq = torch.bincount(labels, minlength=c).double() / len(labels)
    shift = proxy - teacher
    left.axhline(0, color="0.5", lw=0.8)
    left.bar(classes, shift.mean(0), yerr=shift.std(0), capsize=2 if c <= 20 else 0,
             label="proxy - teacher (mean, std over examples)")
    left.plot(classes, freq - teacher.mean(0), "kD", ms=4 if c <= 20 else 2,
              label="label frequency - teacher mean")
    if c <= 20:
        left.set_xticks(classes)
    left.set_xlabel("class")
    left.set_ylabel("probability shift")
    left.set_title("Per-class probability shift")
    left.legend(fontsize=8)
    right.plot([0, 1], [0, 1], ":", color="0.5", label="perfect calibration")
    for name, probs in (("teacher", teacher), ("proxy teacher", proxy)):
        rel = reliability(probs, labels)
        seen = rel.count > 0
        right.plot(rel.confidence[seen], rel.accuracy[seen], "o-", label=f"{name} (ECE {rel.ece:.3f})")
    right.set_xlabel("confidence (top-1 probability)")
    right.set_ylabel("accuracy")
    right.set_xlim(0, 1)
    right.set_ylim(0, 1)
    right.set_title("Reliability diagram")
    right.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
