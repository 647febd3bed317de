"""Fine-tuning a seq2seq teacher through its verbalizer (ptdistill.families.text.verbalizer_model): the
wrapper's class scores are the inference scores, fit_text learns a toy task with them, the saved
checkpoint is a plain seq2seq LM scored alike, and TextBackend trains and scores such a teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import text_fixtures
import torch
from text_fixtures import tiny_gpt2, tiny_t5

from ptdistill.config import ConfigError
from ptdistill.experiments import TextConfig
from ptdistill.families.text.backend import TEACHER_FILE, TextBackend
from ptdistill.families.text.batching import collate, encode
from ptdistill.families.text.models import HFModelSpec, load_generative, load_tokenizer, save_model
from ptdistill.families.text.scoring import Verbalizer, verbalizer_logits
from ptdistill.families.text.split import TextSplit
from ptdistill.families.text.trainer import TextTrainConfig, fit_text
from ptdistill.families.text.verbalizer_model import VerbalizerClassifier
from ptdistill.storage import open_store

# slow: fine-tunes tiny seq2seq models.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

POSITIVE, NEGATIVE = ("good", "great"), ("bad", "awful")
FILLER = "the movie film was is it this a very so and of".split()
VERBALIZER = Verbalizer("sst2 sentence: {text_a}", ("negative", "positive"))
#: Learns the toy task (training accuracy 1.0 from 0.5) for every tiny_t5 seed tried (0-5), in < 1 s.
FAST = dict(epochs=8, lr=3e-3, batch_size=8, device="cpu", log_every_steps=4)


def toy_split(n: int, seed: int) -> TextSplit:
    """Label 1 iff the sentence holds "good" / "great" (else "bad" / "awful"), among filler words."""
    return text_fixtures.toy_split(n, seed, POSITIVE, NEGATIVE, FILLER, filler_words=(2, 6))


def accuracy(logits: np.ndarray, split: TextSplit) -> float:
    return float((logits.argmax(axis=1) == split.labels).mean())


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return tiny_t5(tmp_path_factory.mktemp("t5"))


def load_t5(directory, training: bool = True):
    spec = HFModelSpec(str(directory), kind="seq2seq", max_length=32)
    return load_generative(spec, device="cpu", training=training), load_tokenizer(spec)


@pytest.mark.parametrize("include_eos", [True, False])
def test_wrapper_logits_equal_verbalizer_logits(t5_dir, include_eos):
    lm, tokenizer = load_t5(t5_dir)
    verbalizer = Verbalizer("review: {text_a} question: {text_b} sentiment:", ("positive", "not_entailment", "bad"),
                            include_eos=include_eos)
    assert len(tokenizer("not_entailment", add_special_tokens=False)["input_ids"]) >= 2
    split = TextSplit(["the movie was good", "an awful, boring film and not fun at all", "fun"],
                      ["a b", "the plot is bad and very boring", "yes"], labels=np.array([0, 2, 1]))
    model = VerbalizerClassifier(lm, tokenizer, verbalizer)
    assert model.config.num_labels == 3 and model.training
    prompts = verbalizer.prompt_split(split)
    assert prompts.text_a == verbalizer.format(split) and prompts.text_b is None
    np.testing.assert_array_equal(prompts.labels, split.labels)
    batch = collate(tokenizer, encode(tokenizer, prompts, 32))  # fit_text's batch: right-padded prompts
    assert batch["attention_mask"].min() == 0
    expected = verbalizer_logits(lm, tokenizer, split, verbalizer, batch_size=2, max_length=32)
    assert lm.training  # verbalizer_logits leaves the mode as it was
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (3, 3) and logits.dtype == torch.float32
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5, rtol=0)
    model.train()
    train_logits = model(**batch).logits  # tiny_t5 has no dropout: same values, now with gradients
    assert train_logits.requires_grad
    train_logits.logsumexp(-1).sum().backward()
    assert lm.get_input_embeddings().weight.grad is not None
    assert all(key.startswith(("lm.", "label_")) for key in model.state_dict())


def test_causal_lm_is_refused(tmp_path):
    spec = HFModelSpec(str(tiny_gpt2(tmp_path / "gpt2")), kind="causal")
    with pytest.raises(ValueError, match="seq2seq LMs .* only, not causal"):
        VerbalizerClassifier(load_generative(spec, device="cpu"), load_tokenizer(spec), VERBALIZER)


@pytest.mark.parametrize("seed", [0, 1])
def test_fine_tuning_learns_the_label_words_and_saves_a_seq2seq_checkpoint(tmp_path, seed):
    lm, tokenizer = load_t5(tiny_t5(tmp_path / "t5", seed=seed))
    train, held_out = toy_split(48, seed), toy_split(24, seed + 100)
    before = accuracy(verbalizer_logits(lm, tokenizer, train, VERBALIZER), train)
    model = VerbalizerClassifier(lm, tokenizer, VERBALIZER)
    history = fit_text(model, tokenizer, VERBALIZER.prompt_split(train), TextTrainConfig(seed=seed, **FAST),
                       validation=VERBALIZER.prompt_split(held_out), max_length=32)
    trained = verbalizer_logits(lm, tokenizer, train, VERBALIZER, max_length=32)
    assert before <= 0.6 and accuracy(trained, train) >= 0.9
    assert history.val_accuracy[-1] == pytest.approx(accuracy(verbalizer_logits(lm, tokenizer, held_out, VERBALIZER,
                                                                                 max_length=32), held_out))
    assert history.train_loss[-1][1] < history.train_loss[0][1]

    out = save_model(model.lm, tokenizer, tmp_path / "teacher")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["T5ForConditionalGeneration"]
    reloaded, reloaded_tokenizer = load_t5(out, training=False)
    assert not reloaded.training
    np.testing.assert_allclose(verbalizer_logits(reloaded, reloaded_tokenizer, train, VERBALIZER, max_length=32),
                               trained, atol=1e-5, rtol=0)
    model.eval()
    with torch.no_grad():
        wrapper = model(**collate(tokenizer, encode(tokenizer, VERBALIZER.prompt_split(train), 32))).logits
    np.testing.assert_allclose(wrapper.numpy(), trained, atol=1e-5, rtol=0)


def test_activation_checkpointing_goes_to_the_lm(t5_dir):
    train = toy_split(16, 0)
    weights = []
    for checkpointing in (False, True):
        lm, tokenizer = load_t5(t5_dir)
        model = VerbalizerClassifier(lm, tokenizer, VERBALIZER)
        assert model.supports_gradient_checkpointing
        seen = set()
        hook = lm.register_forward_pre_hook(lambda module, args: seen.add(module.is_activation_checkpointing))
        config = TextTrainConfig(**{**FAST, "epochs": 1, "gradient_checkpointing": checkpointing})
        fit_text(model, tokenizer, VERBALIZER.prompt_split(train), config, max_length=32)
        hook.remove()
        assert seen == {checkpointing} and not lm.is_activation_checkpointing  # on during the run only
        weights.append({k: v.clone() for k, v in lm.state_dict().items()})
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, atol=1e-6, rtol=0)


def text_config(teacher_spec: HFModelSpec) -> TextConfig:
    config = TextConfig()
    config.teacher.model = teacher_spec
    config.teacher.fine_tune = True
    config.teacher.prompt, config.teacher.label_words = VERBALIZER.prompt, list(VERBALIZER.label_words)
    config.teacher.train = TextTrainConfig(**FAST)
    return config


def test_backend_fine_tunes_a_seq2seq_teacher_and_scores_it_through_the_verbalizer(tmp_path, t5_dir):
    train, validation, test = toy_split(48, 0), toy_split(16, 1), toy_split(24, 2)
    train_path, validation_path = train.save(tmp_path / "train.parquet"), validation.save(tmp_path / "val.parquet")
    config = text_config(HFModelSpec(str(t5_dir), kind="seq2seq", max_length=32, batch_size=16))
    backend = TextBackend()
    out = tmp_path / "teacher"
    result = backend.train_teacher(config, 2, train_path, validation_path, out,
                                   checkpoints=(str(tmp_path / "store"), "run/checkpoints/teacher"))
    assert open_store(str(tmp_path / "store")).exists("run/checkpoints/teacher/latest.json")  # resumable; the step clears

    record = json.loads((out / TEACHER_FILE).read_text())
    assert record["fine_tuned"] and record["epochs_run"] == FAST["epochs"]
    training = result["training"]  # which epoch's weights it kept (select last: the final ones), for the report
    assert (training["select"], training["epoch"], training["epochs_run"]) == ("last", FAST["epochs"], FAST["epochs"])
    assert training["curve"]["epoch"] == list(range(1, FAST["epochs"] + 1)) and training["val_nll"] > 0
    assert result["teacher_id"].startswith(f"{record['source']}@{record['source_revision']}+fine-tuned@sha256:")
    spec, _, _ = backend._pinned(config, out)
    assert spec.kind == "seq2seq" and spec.name_or_path == str(out) and spec.max_length == 32
    assert backend.inference_settings(config)["verbalizer"]["label_words"] == ("negative", "positive")

    logits = backend.teacher_logits(config, 2, out, test)
    reloaded, tokenizer = load_t5(out, training=False)
    np.testing.assert_allclose(logits, verbalizer_logits(reloaded, tokenizer, test, VERBALIZER, max_length=32),
                               atol=1e-5, rtol=0)
    assert accuracy(logits, test) >= 0.9
    untrained, _ = load_t5(t5_dir, training=False)
    assert accuracy(verbalizer_logits(untrained, tokenizer, test, VERBALIZER, max_length=32), test) <= 0.6


def test_config_refuses_to_fine_tune_a_causal_teacher_or_mismatched_label_words(tmp_path, t5_dir):
    causal = text_config(HFModelSpec(str(tmp_path / "missing"), kind="causal"))
    with pytest.raises(ConfigError, match="causal LM teacher .* not supported"):
        causal.validate(2)
    three = text_config(HFModelSpec(str(t5_dir), kind="seq2seq", max_length=32))
    three.teacher.label_words = ["negative", "neutral", "positive"]
    with pytest.raises(ConfigError, match="expected 2 words"):
        three.validate(2)
