"""Tests of ptdistill.families.mlp.training: learning, distillation without labels, determinism, early stopping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import new_mlp

from ptdistill.config import from_dict, to_dict
from ptdistill.engine import History, progress_postfix, resolve_device
from ptdistill.families.mlp.gaussians import GaussianTask, make_splits
from ptdistill.families.mlp.split import FeatureSplit
from ptdistill.families.mlp.training import TrainConfig, distill, predict_probs, train_classifier
from ptdistill.losses import build_loss

CPU = {"device": "cpu"}


@pytest.fixture(scope="module")
def separable():
    """Three well separated classes in 5 dims (Bayes accuracy > 99%)."""
    sizes = {"teacher_train": 300, "distill": 300, "validation": 100, "test": 500}
    return make_splits(GaussianTask(dim=5, sigma=0.2), sizes)


@pytest.fixture(scope="module")
def synthetic():
    """The synthetic task (docs/method.md §7.1) at small sizes."""
    return make_splits(GaussianTask(), {"distill": 1000, "validation": 200, "test": 2000}, seed=1)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_train_classifier_learns_a_separable_task(separable):
    model = new_mlp(5)
    config = TrainConfig(epochs=8, batch_size=32, lr=3e-3, log_every_steps=5, **CPU)
    history = train_classifier(model, separable["teacher_train"], config, validation=separable["validation"])
    losses = [value for _, value in history.train_loss]
    assert losses[-1] < 0.5 * losses[0]
    test = separable["test"]
    accuracy = (predict_probs(model, test.features, device="cpu").argmax(1) == test.labels).mean()
    assert accuracy > 0.95
    assert history.val_accuracy[-1] > 0.95
    assert history.epochs_run == 8 and history.val_epoch == list(range(1, 9))
    assert history.steps == config.total_steps(300) == 8 * 10
    # Loss windows end every 5 steps, and the run's last step is logged.
    assert [step for step, _ in history.train_loss] == list(range(5, 81, 5))
    assert history.seconds > 0 and history.examples_per_second > 0
    assert not history.stopped_early
    json.dumps(history.to_dict())


@pytest.mark.slow
def test_distill_kl_on_pstar_approaches_pstar(synthetic):
    """The oracle student: distill on p* with the kl loss, through the same function as every student."""
    train, test = synthetic["distill"], synthetic["test"]
    model = new_mlp(30, hidden=(64,))

    def l2_to_pstar() -> float:
        return float(np.linalg.norm(predict_probs(model, test.features, device="cpu") - test.p_star, axis=1).mean())

    before = l2_to_pstar()
    history = distill(model, train, train.p_star, build_loss("kl"), TrainConfig(epochs=8, lr=2e-3, **CPU))
    after = l2_to_pstar()
    assert after < 0.5 * before
    assert history.train_loss[-1][1] < history.train_loss[0][1]


@pytest.mark.slow
def test_distill_never_reads_train_labels(synthetic):
    unlabeled = synthetic["distill"]
    assert unlabeled.labels is None
    probs = unlabeled.p_star
    config = TrainConfig(epochs=2, **CPU)
    model = new_mlp(30)
    distill(model, unlabeled, probs, build_loss("ptloss", eps=[[1.0, 0.5]] * 3), config)
    # With (wrong) labels attached the result is bit-for-bit the same: they are not used.
    labeled = FeatureSplit(features=unlabeled.features, labels=np.zeros(len(unlabeled), dtype=np.int64))
    other = new_mlp(30)
    distill(other, labeled, probs, build_loss("ptloss", eps=[[1.0, 0.5]] * 3), config)
    assert same_state(state(model), state(other))


@pytest.mark.slow
def test_same_seed_same_weights(synthetic):
    train, validation = synthetic["distill"], synthetic["validation"]
    runs = []
    for _ in range(2):
        model = new_mlp(30, seed=7)
        config = TrainConfig(epochs=2, seed=3, **CPU)
        history = distill(model, train, train.p_star, build_loss("kl"), config, validation)
        runs.append((state(model), history))
    assert same_state(runs[0][0], runs[1][0])
    assert runs[0][1].train_loss == runs[1][1].train_loss
    assert runs[0][1].val_accuracy == runs[1][1].val_accuracy
    # Another shuffling seed gives other weights from the same initialisation.
    model = new_mlp(30, seed=7)
    distill(model, train, train.p_star, build_loss("kl"), TrainConfig(epochs=2, seed=4, **CPU))
    assert not same_state(runs[0][0], state(model))


@pytest.mark.slow
def test_early_stopping_restores_the_best_weights(separable):
    # A high learning rate on a 20-example validation set: accuracy peaks early and then wobbles.
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    model = new_mlp(5)
    history = train_classifier(
        model,
        separable["teacher_train"],
        TrainConfig(epochs=40, lr=0.05, patience=2, select="accuracy", **CPU),
        validation=FeatureSplit(separable["validation"].features[:20], separable["validation"].labels[:20]),
        on_epoch=lambda epoch, h: snapshots.__setitem__(epoch, state(model)),
    )
    assert history.stopped_early
    assert history.epochs_run == history.best_epoch + 2 < 40
    assert history.best_val_accuracy == max(history.val_accuracy)
    assert history.val_accuracy.index(max(history.val_accuracy)) + 1 == history.best_epoch
    assert same_state(state(model), snapshots[history.best_epoch])
    assert not same_state(state(model), snapshots[history.epochs_run])


def test_without_patience_the_final_weights_are_kept(separable):
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    model = new_mlp(5)
    history = train_classifier(
        model,
        separable["teacher_train"],
        TrainConfig(epochs=4, lr=0.05, eval_every_epochs=3, **CPU),
        validation=separable["validation"],
        progress=True,
        on_epoch=lambda epoch, h: snapshots.__setitem__(epoch, state(model)),
    )
    assert history.val_epoch == [3, 4]  # every 3 epochs, and always the last
    assert history.epochs_run == 4 and history.best_epoch in (3, 4)
    assert same_state(state(model), snapshots[4])


def test_annealing_kd_gets_the_global_step(synthetic):
    train = FeatureSplit(synthetic["distill"].features[:100])
    probs = synthetic["distill"].p_star[:100]
    config = TrainConfig(epochs=3, batch_size=32, **CPU)
    loss = build_loss("annealing_kd", max_temperature=3, total_steps=config.total_steps(len(train)))
    calls: list[int] = []
    set_step = loss.set_step
    loss.set_step = lambda step: (calls.append(step), set_step(step))
    history = distill(new_mlp(30), train, probs, loss, config)
    assert calls == list(range(3 * 4)) == list(range(history.steps))
    assert loss.step == history.steps - 1


def test_predict_probs_float64_rows_and_mode(synthetic):
    model = new_mlp(30)
    model.train()
    probs = predict_probs(model, synthetic["test"].features[:50], batch_size=7, device="cpu")
    assert probs.dtype == np.float64 and probs.shape == (50, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    assert model.training  # the caller's mode is restored
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(synthetic["test"].features[:50])).double(), -1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5)  # float32 logits, other batch blocking
    with pytest.raises(ValueError, match=r"features: expected features of shape \(n, d\)"):
        predict_probs(model, np.zeros(30), device="cpu")


def test_train_config_round_trip_and_validation():
    config = TrainConfig(epochs=3, patience=2, select="accuracy")
    assert from_dict(TrainConfig, json.loads(json.dumps(to_dict(config)))) == config
    assert config.steps_per_epoch(65) == 3 and config.total_steps(64) == 6
    with pytest.raises(ValueError, match=r"unknown key momentum"):
        from_dict(TrainConfig, {"momentum": 0.9})
    for kwargs, match in [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"patience": 0}, "patience"),
        ({"precision": "fp8"}, "precision: expected one of auto, fp32, bf16, fp16"),
        # patience counts epochs; with validation every 2 epochs its old meaning (evaluations) is refused
        ({"patience": 3, "select": "accuracy", "eval_every_epochs": 2}, "patience: counts epochs .* needs eval_every_epochs=1"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**kwargs)


def test_devices_and_precision():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device: expected 'auto' or a torch device string"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bad_inputs_fail_before_training(synthetic, separable):
    unlabeled = synthetic["distill"]
    labeled = separable["teacher_train"]
    kl = build_loss("kl")
    with pytest.raises(ValueError, match="train: has no labels"):
        train_classifier(new_mlp(30), unlabeled, TrainConfig(epochs=1, **CPU))
    with pytest.raises(ValueError, match=r"teacher_probs: expected shape \(1000, 3\)"):
        distill(new_mlp(30), unlabeled, unlabeled.p_star[:10], kl, TrainConfig(epochs=1, **CPU))
    with pytest.raises(ValueError, match="teacher_probs: rows must sum to 1"):
        distill(new_mlp(30), unlabeled, 2 * unlabeled.p_star, kl, TrainConfig(epochs=1, **CPU))
    with pytest.raises(ValueError, match="validation: config.patience=3"):
        distill(new_mlp(30), unlabeled, unlabeled.p_star, kl, TrainConfig(epochs=1, patience=3, select="nll", **CPU))
    with pytest.raises(ValueError, match="validation: has no labels"):
        distill(new_mlp(30), unlabeled, unlabeled.p_star, kl, TrainConfig(epochs=1, **CPU), validation=unlabeled)
    with pytest.raises(ValueError, match="validation.features: expected 5 features"):
        train_classifier(new_mlp(5), labeled, TrainConfig(epochs=1, **CPU), validation=synthetic["validation"])
    bad_labels = FeatureSplit(labeled.features, np.full(len(labeled), 3))
    with pytest.raises(ValueError, match=r"train.labels: labels must lie in \[0, 3\)"):
        train_classifier(new_mlp(5), bad_labels, TrainConfig(epochs=1, **CPU))
    with pytest.raises(ValueError, match="train: expected a FeatureSplit"):
        train_classifier(new_mlp(5), labeled.features, TrainConfig(epochs=1, **CPU))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="precision: 'fp16' needs CUDA"):
            train_classifier(new_mlp(5), labeled, TrainConfig(epochs=1, precision="fp16"))


class NaNLogits(torch.nn.Module):
    """A model whose loss is NaN, standing in for a diverged run."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.linear(x) * float("nan")


def test_diverging_training_raises():
    split = FeatureSplit(np.ones((64, 2)), np.tile([0, 1], 32))
    with pytest.raises(FloatingPointError, match=r"training loss became nan at step 1 \(epoch 1\); try a lower lr"):
        train_classifier(NaNLogits(), split, TrainConfig(epochs=1, **CPU))


def test_history_defaults_are_independent():
    a, b = History(), History()
    a.train_loss.append((1, 0.5))
    assert b.train_loss == []


def test_progress_postfix_leaves_out_what_is_not_measured_yet():
    assert progress_postfix(None, None) == {}
    assert progress_postfix(0.25, None) == {"loss": 0.25}
    assert progress_postfix(None, 0.5) == {"val_acc": 0.5}
    assert progress_postfix(0.25, 0.5) == {"loss": 0.25, "val_acc": 0.5}


@pytest.mark.slow
def test_progress_bar_shows_no_nan_and_counts_the_steps_of_the_epoch_it_describes(separable, capsys, monkeypatch):
    """A loss window longer than an epoch (10 steps here) and validation every other epoch: the
    first epoch's line has the running loss and no val_acc, never ``nan``; the bar counts
    optimiser steps and each epoch's values appear with that epoch's last step."""
    import functools

    import ptdistill.engine.loop as loop

    # Every update drawn (not every 0.1 s), so each epoch's line is there to check.
    monkeypatch.setattr(loop, "tqdm", functools.partial(loop.tqdm, mininterval=0, miniters=1))
    config = TrainConfig(epochs=3, batch_size=32, log_every_steps=25, eval_every_epochs=2, **CPU)
    train_classifier(new_mlp(5), separable["teacher_train"], config, validation=separable["validation"],
                     progress=True)
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
             if line.startswith("teacher:")]
    assert lines and not any("nan" in line for line in lines), lines
    first = [line for line in lines if " 10/30 " in line]
    assert any("loss=" in line for line in first) and not any("val_acc" in line for line in first)
    assert any("val_acc=" in line for line in lines if " 20/30 " in line)
    assert not any("loss" in line for line in lines if " 5/30 " in line)
