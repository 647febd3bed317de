"""Checkpoint selection (``TrainSettings.select``) and early stopping on the selected score, in the one
engine: on a constructed validation curve the run ends with the weights of the epoch the rule picks.
Also its JSON summary (``History.selection``) and that select and patience are part of the
trained-teacher cache key and of a run's checkpoint identity."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import new_mlp, weights_sha

from ptdistill.engine import Checkpointer, TrainSettings, TrainingTask, ValidationScores, fit, run_identity
from ptdistill.experiments import SyntheticConfig
from ptdistill.families.mlp.gaussians import GaussianTask, make_splits
from ptdistill.families.mlp.training import TrainConfig, distill, train_classifier
from ptdistill.losses import build_loss
from ptdistill.steps.teacher import trained_teacher_key
from ptdistill.storage import content_key

#: A validation curve: (accuracy, NLL) after epochs 1..8. Accuracy peaks at epoch 6, NLL bottoms at
#: epoch 3 and ties it at epoch 7 (the earlier epoch is kept).
CURVE = [(0.60, 0.90), (0.70, 0.60), (0.72, 0.40), (0.74, 0.45), (0.75, 0.50), (0.80, 0.55), (0.78, 0.40),
         (0.79, 0.70)]


class ScriptedTask(TrainingTask):
    """Real SGD steps on a small MLP; validation scores read from ``curve`` (one entry per evaluation)."""

    desc, num_examples = "scripted", 64

    def __init__(self, curve: list[tuple[float, float]] | None) -> None:
        self.curve, self.calls = curve, 0
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(64, 4, generator=generator), torch.randint(0, 3, (64,), generator=generator)

    def epoch_batches(self, epoch, generator):
        return list(torch.randperm(64, generator=generator).split(16))

    def forward(self, model, rows):
        return model(self.x[rows])

    def loss(self, logits, rows):
        return torch.nn.functional.cross_entropy(logits, self.y[rows])

    def make_optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=0.1)

    def evaluate(self, model):
        if self.curve is None:
            return None
        accuracy, nll = self.curve[self.calls]
        self.calls += 1
        return ValidationScores(accuracy, nll, 0.01 * self.calls)


def run(select: str, patience: int | None = None, curve=CURVE) -> tuple[dict[int, str], str, object]:
    """(weights hash after each epoch, final weights hash, history) of an 8-epoch scripted run."""
    model, seen = new_mlp(4, seed=1), {}
    history = fit(model, ScriptedTask(curve), TrainSettings(epochs=8, select=select, patience=patience, device="cpu"),
                  on_epoch=lambda epoch, _: seen.__setitem__(epoch, weights_sha(model)))
    return seen, weights_sha(model), history


@pytest.mark.parametrize(("select", "epoch"), [("nll", 3), ("accuracy", 6), ("last", 8)])
def test_the_run_ends_with_the_selected_epochs_weights(select, epoch):
    seen, final, history = run(select)
    assert history.epochs_run == 8 and not history.stopped_early
    assert history.best_epoch == epoch and history.select == select
    assert final == seen[epoch]  # the restored weights are that epoch's, bit for bit
    assert (history.best_val_accuracy, history.best_val_nll) == CURVE[epoch - 1]
    assert history.best_val_ece == pytest.approx(0.01 * epoch)
    assert history.val_nll == [nll for _, nll in CURVE] and history.val_ece == pytest.approx([0.01 * e for e in range(1, 9)])


@pytest.mark.parametrize(("select", "patience", "stopped_at", "epoch"),
                         [("nll", 2, 5, 3), ("nll", 4, 7, 3), ("accuracy", 1, 7, 6), ("accuracy", 3, 8, 6),
                          ("nll", 5, 8, 3)])  # out of patience at the last epoch: not an early stop
def test_patience_counts_epochs_without_a_gain_in_the_selected_score(select, patience, stopped_at, epoch):
    seen, final, history = run(select, patience)
    assert history.epochs_run == stopped_at and history.stopped_early == (stopped_at < 8)
    assert history.best_epoch == epoch and final == seen[epoch]


def test_selection_on_a_curve_whose_last_epoch_is_best_keeps_the_final_weights():
    curve = [(0.5 + 0.01 * e, 1.0 - 0.1 * e) for e in range(8)]
    seen, final, history = run("nll", curve=curve)
    assert history.best_epoch == 8 and final == seen[8]


def test_selection_without_validation_is_refused():
    with pytest.raises(ValueError, match="select: 'nll' chooses the epoch on validation scores"):
        run("nll", curve=None)
    _, _, history = run("last", curve=None)
    assert history.best_epoch is None and history.val_epoch == []


@pytest.mark.parametrize(("settings", "message"), [
    ({"select": "loss"}, "select: expected one of last, accuracy, nll, got 'loss'"),
    ({"patience": 3}, "patience: early stopping .* select='last' keeps the final weights; set select to 'nll'"),
])
def test_bad_selection_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(**settings)


def test_a_real_mlp_teacher_selected_by_nll_stops_before_it_overfits(one_thread):
    """The synthetic benchmark's failure mode in small: an over-trained teacher's validation NLL rises
    while its accuracy barely moves; selection by NLL keeps the epoch of lowest validation NLL."""
    splits = make_splits(GaussianTask(dim=30, sigma=2.0), {"teacher_train": 200, "validation": 300}, seed=3)
    model = new_mlp(30, (64,), seed=0)
    history = train_classifier(model, splits["teacher_train"], TrainConfig(epochs=30, lr=5e-3, select="nll", device="cpu"),
                               validation=splits["validation"])
    lowest = min(range(len(history.val_nll)), key=history.val_nll.__getitem__)
    assert history.best_epoch == history.val_epoch[lowest] < 30
    assert history.val_nll[-1] > history.best_val_nll  # it did over-fit after the selected epoch


def test_selection_summarises_the_selected_epoch_and_the_curve_as_json():
    _, _, history = run("nll", patience=2)
    selection = history.selection()
    assert selection == {
        "select": "nll", "epoch": 3, "epochs_run": 5, "stopped_early": True,
        "val_accuracy": 0.72, "val_nll": 0.40, "val_ece": 0.01 * 3,
        "curve": {"epoch": [1, 2, 3, 4, 5], "accuracy": [0.60, 0.70, 0.72, 0.74, 0.75],
                  "nll": [0.90, 0.60, 0.40, 0.45, 0.50], "ece": [0.01 * e for e in range(1, 6)]},
    }
    assert json.loads(json.dumps(selection)) == selection
    selection["curve"]["nll"].append(9.0)  # a copy: the history's own curve is untouched
    assert history.val_nll == [0.90, 0.60, 0.40, 0.45, 0.50]


def test_selection_without_validation_has_no_epoch_and_an_empty_curve():
    _, _, history = run("last", curve=None)
    assert history.selection() == {
        "select": "last", "epoch": None, "epochs_run": 8, "stopped_early": False,
        "val_accuracy": None, "val_nll": None, "val_ece": None,
        "curve": {"epoch": [], "accuracy": [], "nll": [], "ece": []},
    }


def _teacher_config(select: str, patience: int | None):
    config = SyntheticConfig.quick()
    train = dataclasses.replace(config.teacher.train, select=select, patience=patience)
    return dataclasses.replace(config, teacher=dataclasses.replace(config.teacher, train=train))


def test_the_trained_teacher_cache_key_changes_with_select_and_patience(tmp_path):
    splits = make_splits(GaussianTask(dim=4), {"teacher_train": 20, "validation": 10}, seed=0)
    paths = [splits[name].save(tmp_path / f"{name}.parquet") for name in ("teacher_train", "validation")]
    settings = [("last", None), ("accuracy", 2), ("nll", 2), ("nll", 3), ("nll", None)]
    keys = [trained_teacher_key(_teacher_config(*s), 3, *paths) for s in settings]
    assert len(set(keys)) == len(settings)
    assert trained_teacher_key(_teacher_config("nll", 2), 3, *paths) == keys[2]


@pytest.mark.parametrize("family", ["mlp", "text"])
def test_the_checkpoint_run_identity_includes_select_and_patience(family):
    """A student's checkpoint is resumed only by a run of the same identity: select is part of it."""
    if family == "mlp":
        from ptdistill.families.mlp.training import _NOT_IN_RUN_ID
        from ptdistill.families.mlp.training import TrainConfig as Config
    else:
        from ptdistill.families.text.trainer import _NOT_IN_RUN_ID
        from ptdistill.families.text.trainer import TextTrainConfig as Config

    def key(**settings) -> str:
        return content_key(run_identity(Config(**settings), ignore=_NOT_IN_RUN_ID, data={}, targets=None, loss=None,
                                        model=new_mlp(4)))

    keys = {key(select="last"), key(select="accuracy"), key(select="nll"), key(select="nll", patience=2)}
    assert len(keys) == 4 and key(select="nll") == key(select="nll")


def test_a_checkpoint_of_a_run_with_another_select_is_refused(tmp_path, one_thread):
    splits = make_splits(GaussianTask(dim=4), {"distill": 64, "validation": 32}, seed=0)
    train, validation = splits["distill"], splits["validation"]
    checkpoints = Checkpointer(str(tmp_path), "ckpt")
    distill(new_mlp(4), train, train.p_star, build_loss("kl"), TrainConfig(epochs=1, device="cpu"),
            validation=validation, checkpoints=checkpoints)
    with pytest.raises(ValueError, match=r"checkpoint of a different run: it differs in config.select: 'last' -> 'nll'"):
        distill(new_mlp(4), train, train.p_star, build_loss("kl"), TrainConfig(epochs=1, select="nll", device="cpu"),
                validation=validation, checkpoints=checkpoints)
