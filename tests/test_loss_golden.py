"""Every registered loss against golden values (torchdistill style): ``fixtures/loss_golden.json``,
computed once in float64 by ``fixtures/make_loss_golden.py``, an independent numpy re-implementation
of the formulas. A loss registered without golden cases fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ptdistill.losses import LOSSES, build_loss

GOLDEN = json.loads((Path(__file__).resolve().parent / "fixtures" / "loss_golden.json").read_text())
REDUCTIONS = ("none", "mean", "sum")
#: (rtol, atol) per input dtype: float64 losses are computed in float64, float32 ones in float32.
TOLERANCE = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-6, 2e-6)}


def test_golden_cases_name_only_registered_losses():
    assert {case["loss"] for case in GOLDEN} <= set(LOSSES)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_matches_golden_values(name, dtype):
    cases = [case for case in GOLDEN if case["loss"] == name]
    assert cases, f"loss {name!r} is registered but has no golden case: add it to tests/fixtures/make_loss_golden.py"
    rtol, atol = TOLERANCE[dtype]
    for case in cases:
        logits = torch.tensor(case["logits"], dtype=torch.float64).to(dtype)
        probs = torch.tensor(case["teacher_probs"], dtype=torch.float64).to(dtype)
        hparams = case["hparams"]  # eps as the nested list a config holds
        for reduction in REDUCTIONS:
            loss = build_loss(name, **hparams, reduction=reduction)
            if "step" in case:
                loss.set_step(case["step"])
            got = loss(logits, probs)
            expected = torch.tensor(case["expected"][reduction], dtype=torch.float64)
            assert got.dtype == dtype
            torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=atol,
                                       msg=lambda m, c=case, r=reduction: f"{c['hparams']} {r}: {m}")
