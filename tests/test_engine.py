"""The one training engine: the MLP loop's golden outputs, bit-identical resume of an MLP run,
the loop state's round trip, the precision rule and early stopping in epochs."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from conftest import history_sha, new_mlp, weights_sha

from ptdistill.engine import Checkpointer, History, LoopState, autocast_dtype
from ptdistill.families.mlp.gaussians import GaussianTask, make_splits
from ptdistill.families.mlp.split import FeatureSplit
from ptdistill.families.mlp.training import TrainConfig, distill, train_classifier
from ptdistill.losses import build_loss

CPU = {"device": "cpu"}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test of this file on one thread (conftest's one_thread)."""


@pytest.fixture(scope="module")
def separable():
    return make_splits(GaussianTask(dim=5, sigma=0.2), {"teacher_train": 300, "distill": 300, "validation": 100,
                                                       "test": 500})


@pytest.fixture(scope="module")
def synthetic():
    return make_splits(GaussianTask(), {"distill": 1000, "validation": 200, "test": 2000}, seed=1)


# Recorded from commit b7feba3's loop (ptdistill/families/mlp/training.py::_fit, before the
# engine) on CPU with one thread: the engine must give the same weights and history bit for bit.
def test_teacher_matches_the_old_loop(separable):
    model = new_mlp(5)
    history = train_classifier(model, separable["teacher_train"],
                               TrainConfig(epochs=8, lr=3e-3, log_every_steps=5, **CPU),
                               validation=separable["validation"])
    assert (weights_sha(model), history_sha(history)) == ("4a3590f049c2bc2f", "5f0d6c3e503cf22e")


def test_early_stopped_teacher_matches_the_old_loop(separable):
    model = new_mlp(5)
    validation = FeatureSplit(separable["validation"].features[:20], separable["validation"].labels[:20])
    history = train_classifier(model, separable["teacher_train"], TrainConfig(epochs=40, lr=0.05, patience=2, select="accuracy", **CPU),
                               validation=validation)
    assert history.epochs_run == 3 and history.stopped_early
    assert (weights_sha(model), history_sha(history)) == ("4cc93aab71068050", "0ebb025ae5aa8f2b")


def test_ptloss_student_matches_the_old_loop(synthetic):
    model = new_mlp(30, (64,), seed=7)
    history = distill(model, synthetic["distill"], synthetic["distill"].p_star,
                      build_loss("ptloss", eps=[[1.0, 0.5]] * 3),
                      TrainConfig(epochs=3, seed=3, log_every_steps=7, **CPU), synthetic["validation"])
    assert (weights_sha(model), history_sha(history)) == ("7c6b4d15fddd1db6", "cc7bb26ca60ae43f")


def test_annealing_student_with_sparse_validation_matches_the_old_loop(synthetic):
    config = TrainConfig(epochs=3, batch_size=32, eval_every_epochs=2, **CPU)
    loss = build_loss("annealing_kd", max_temperature=3, total_steps=config.total_steps(1000))
    model = new_mlp(30, (64,), seed=2)
    history = distill(model, synthetic["distill"], synthetic["distill"].p_star, loss, config, synthetic["validation"])
    assert history.val_epoch == [2, 3]
    assert (weights_sha(model), history_sha(history)) == ("6479081b0c9fad70", "455fa46e0f699e49")


class Interrupted(Exception):
    pass


class StopAt(torch.nn.Module):
    """A loss that raises :class:`Interrupted` on call ``at`` (0-based), like a killed worker."""

    def __init__(self, inner: torch.nn.Module, at: int | None) -> None:
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        if self.calls == self.at:
            raise Interrupted
        self.calls += 1
        return self.inner(logits, probs)


@pytest.mark.parametrize("patience", [None, 1])
def test_an_mlp_run_killed_mid_training_resumes_bit_identically(synthetic, tmp_path, patience):
    train, validation = synthetic["distill"], FeatureSplit(synthetic["validation"].features[:30],
                                                           synthetic["validation"].labels[:30])
    config = TrainConfig(epochs=6, batch_size=100, lr=0.02, log_every_steps=7, patience=patience, select="last" if patience is None else "accuracy", seed=5, **CPU)

    def run(checkpoints=None, at=None):
        model = new_mlp(30, (64,), seed=11)
        loss = StopAt(build_loss("ptloss", eps=[[1.0, 0.5]] * 3), at)
        history = distill(model, train, train.p_star, loss, config, validation, checkpoints=checkpoints)
        return model, history, loss

    model_a, history_a, _ = run()
    last = history_a.epochs_run
    assert last >= 2 and history_a.steps == 10 * last  # 10 batches per epoch
    checkpoints = Checkpointer(str(tmp_path / "store"), "runs/x/checkpoints/kl-seed5")
    with pytest.raises(Interrupted):
        run(checkpoints, at=history_a.steps - 5)  # mid last epoch: the previous epoch's end is the latest
    pointer = checkpoints.latest()
    assert (pointer["epoch"], pointer["batches_done"], pointer["step"], pointer["done"]) == (last - 1, 0, 10 * (last - 1),
                                                                                            False)
    model_b, history_b, loss_b = run(checkpoints)
    assert loss_b.calls == 10
    assert weights_sha(model_a) == weights_sha(model_b)
    assert history_sha(history_a) == history_sha(history_b)
    assert len([k for k in checkpoints.keys() if k.endswith(".pt")]) == 1
    # A finished run's last checkpoint gives the same model at once.
    model_c, history_c, loss_c = run(checkpoints)
    assert loss_c.calls == 0 and weights_sha(model_c) == weights_sha(model_a)
    assert history_sha(history_c) == history_sha(history_a)
    checkpoints.clear()
    assert checkpoints.keys() == []


def test_a_checkpoint_of_another_mlp_run_is_refused(synthetic, tmp_path):
    train = synthetic["distill"]
    checkpoints = Checkpointer(str(tmp_path), "ckpt")
    distill(new_mlp(30), train, train.p_star, build_loss("kl"), TrainConfig(epochs=1, **CPU), checkpoints=checkpoints)
    with pytest.raises(ValueError, match=r"checkpoint of a different run: it differs in config.lr: 0.0005 -> 0.001"):
        distill(new_mlp(30), train, train.p_star, build_loss("kl"), TrainConfig(epochs=1, lr=1e-3, **CPU),
                checkpoints=checkpoints)


def test_loop_state_round_trips_through_a_blob():
    state = LoopState(epoch=2, batches_done=3, step=11, history=History(train_loss=[(5, 0.5)], val_epoch=[1],
                      val_accuracy=[0.75], val_nll=[0.4], best_epoch=1, best_val_accuracy=0.75),
                      best_weights={"w": torch.ones(2)}, epochs_without_gain=1, window_sum=torch.tensor(1.5),
                      window_steps=3, examples=700, seconds=2.5, batch_rng=torch.Generator().get_state())
    back = LoopState.from_blob(state.to_blob())
    assert back.position() == {"epoch": 2, "batches_done": 3, "step": 11, "done": False}
    assert back.history == state.history and back.examples == 700 and float(back.window_sum) == 1.5
    assert torch.equal(back.best_weights["w"], torch.ones(2)) and torch.equal(back.batch_rng, state.batch_rng)
    with pytest.raises(ValueError, match="expected a LoopState blob"):
        LoopState.from_blob({"epoch": 1})


def test_one_precision_rule_for_every_device():
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="precision: 'fp16' needs CUDA"):
        autocast_dtype("fp16", cpu)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        assert autocast_dtype("auto", cuda) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        assert autocast_dtype("fp16", cuda) == torch.float16


def test_bf16_autocast_now_trains_an_mlp_on_cpu(separable):
    model = new_mlp(5)
    history = train_classifier(model, separable["teacher_train"], TrainConfig(epochs=2, precision="bf16", **CPU))
    assert history.steps == 20 and np.isfinite([v for _, v in history.train_loss]).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 weights, bf16 matmuls


def test_the_mlp_backend_checkpoints_students_into_the_artifact_store(synthetic, tmp_path, monkeypatch):
    """``distill_student``'s (store URI, key prefix) serves MLP students: a restarted step finds the
    finished run's checkpoint and returns the same student without training again."""
    from ptdistill.experiments import SyntheticConfig
    from ptdistill.families.mlp.backend import MLPBackend
    from ptdistill.families.mlp.models import weights_hash

    config = SyntheticConfig.quick()
    config.student.hidden = [16]
    config.student.train = TrainConfig(epochs=2, **CPU)
    split, validation = synthetic["distill"], synthetic["validation"]
    store, prefix = str(tmp_path / "store"), "synthetic/r1/checkpoints/kl-seed0"
    first = MLPBackend().distill_student(config, 3, 0, build_loss("kl"), split, split.p_star, validation,
                                         tmp_path / "a", (store, prefix))
    assert Checkpointer(store, prefix).latest()["done"]

    def no_training(*args):
        raise AssertionError("the restarted step trained again")

    monkeypatch.setattr("ptdistill.families.mlp.training._FeatureTask.loss", no_training)
    again = MLPBackend().distill_student(config, 3, 0, build_loss("kl"), split, split.p_star, validation,
                                         tmp_path / "b", (store, prefix))
    assert history_sha(again) == history_sha(first)
    assert weights_hash(tmp_path / "a") == weights_hash(tmp_path / "b")
