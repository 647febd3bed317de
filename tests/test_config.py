"""Strict configuration: defaults, YAML files, ``--set`` overrides, round trips, and the CLI
rejecting bad config or bad data before any pipeline starts."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ptdistill.cli import main
from ptdistill.config import ConfigError, from_dict, load_config, parse_override, to_dict
from ptdistill.experiments import (
    BENCHMARKS,
    MINILM,
    QUICK_TEXT_SIZES,
    GaussianData,
    MethodSpec,
    SyntheticConfig,
    TabularConfig,
    TextConfig,
    config_class,
    config_from_dict,
    default_config,
    default_methods,
)
from ptdistill.families.mlp.training import TrainConfig


def _ints_as_floats(value):
    """What a JSON/protobuf-Struct round trip (KFP parameters) does to integers."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _ints_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints_as_floats(v) for v in value]
    return value


# --------------------------------------------------------------------------- defaults and presets


def test_defaults():
    config = load_config(SyntheticConfig)
    assert config == SyntheticConfig()
    assert config.benchmark == "synthetic" and isinstance(config.data, GaussianData)
    assert config.teacher.train == TrainConfig() and config.student.hidden == [128, 128]
    assert [m.name for m in config.methods] == [m.name for m in default_methods()]
    assert config.seeds == [0, 1, 2] and config.accelerator.count == 0
    assert load_config(TabularConfig).data.path == ""


@pytest.mark.parametrize("benchmark", sorted(BENCHMARKS))
def test_quick_presets(benchmark):
    cls = config_class(benchmark)
    quick = default_config(benchmark, quick=True)
    assert isinstance(quick, cls) and quick.benchmark == benchmark
    assert [m.name for m in quick.methods] == ["ptloss", "kl"]
    assert quick.seeds == [0]
    epochs = 1 if cls is TextConfig else 8
    assert quick.teacher.train.epochs == quick.student.train.epochs == epochs
    assert (quick.search.trials, quick.search.max_order) == (10, 3)
    assert default_config(benchmark, quick=True) is not quick and default_config(benchmark, quick=True) == quick
    if benchmark == "synthetic":
        assert quick.data.sizes == {"teacher_train": 600, "distill": 1200, "validation": 300, "test": 3000}
    if cls is TextConfig and benchmark != "text":
        assert quick.data.task == benchmark and quick.data.sizes == QUICK_TEXT_SIZES
    # quick() does not leak into the defaults (no shared mutable state).
    full = default_config(benchmark)
    assert full.teacher.train.epochs > epochs and full.seeds == [0, 1, 2]


def test_text_benchmark_presets():
    from ptdistill.families.text.data import TEXT_TASKS

    for task in ("cola", "mnli", "mrpc", "rte", "sst2", "boolq"):
        config = default_config(task)
        assert config.data.task == task and config.task_metric == TEXT_TASKS[task].task_metric
        assert (config.teacher.model.name_or_path, config.teacher.model.kind) == ("google-t5/t5-large", "seq2seq")
        assert config.student.model.name_or_path == "google-bert/bert-base-uncased"
        assert [m.name for m in config.methods] == ["ptloss", "kl", "temperature", "label_smoothing", "focal"]
    assert default_config("cola").task_metric == "matthews" and default_config("mrpc").task_metric == "f1"
    rotten = default_config("rotten-tomatoes")
    assert rotten.teacher.fine_tune and rotten.teacher.model.name_or_path == MINILM
    assert rotten.student.model.num_layers == 2 and rotten.student.model.freeze_embeddings
    assert rotten.data.sizes == {}  # the task's own: all 12,752 snippets


def test_overrides_on_top_of_quick():
    config = load_config(SyntheticConfig, None, ["seeds=[0,1]"], base=SyntheticConfig.quick())
    assert config.seeds == [0, 1]
    assert config.data.sizes["distill"] == 1200 and config.student.train.epochs == 8


def test_unknown_benchmark():
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'; available: synthetic, tabular"):
        config_class("nope")


# --------------------------------------------------------------------------- --set


@pytest.mark.parametrize(
    ("override", "get", "expected"),
    [
        ("student.train.epochs=3", lambda c: c.student.train.epochs, 3),
        ("teacher.train.lr=0.01", lambda c: c.teacher.train.lr, 0.01),
        ("teacher.train.lr=1", lambda c: c.teacher.train.lr, 1.0),  # an int where a float is expected
        ("seeds=[0,1]", lambda c: c.seeds, [0, 1]),
        ("seeds=[0, 1.0]", lambda c: c.seeds, [0, 1]),
        ("student.hidden=[8, 4]", lambda c: c.student.hidden, [8, 4]),
        ("student.train.select=nll", lambda c: c.student.train.select, "nll"),
        ("student.train.patience=null", lambda c: c.student.train.patience, None),
        ("search.strategy=implicit", lambda c: c.search.strategy, "implicit"),
        ("data.sizes.test=500", lambda c: c.data.sizes, {"teacher_train": 2000, "distill": 7000,
                                                          "validation": 1000, "test": 500}),
        ("accelerator.count=1", lambda c: (c.accelerator.type, c.accelerator.count), ("nvidia.com/gpu", 1)),
        ("methods=[{name: kl, loss: kl}]", lambda c: c.methods, [MethodSpec("kl", "kl")]),
        ("task_metric=f1", lambda c: c.task_metric, "f1"),
    ],
)
def test_set_overrides(override, get, expected):
    config = load_config(SyntheticConfig, None, [override])
    value = get(config)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, list) and expected and isinstance(expected[0], int):
        assert all(type(v) is int for v in value)


def test_patience_needs_a_score_to_watch():
    config = load_config(SyntheticConfig, None, ["student.train.select=nll", "student.train.patience=2"])
    assert (config.student.train.select, config.student.train.patience) == ("nll", 2)
    with pytest.raises(ConfigError, match=r"student\.train\.patience: early stopping \(patience=2\) watches a"
                                          r" validation score, but select='last'"):
        load_config(SyntheticConfig, None, ["student.train.patience=2"])
    with pytest.raises(ConfigError, match=r"teacher\.train.*select: expected one of last, accuracy, nll, got 'loss'"):
        load_config(SyntheticConfig, None, ["teacher.train.select=loss"])


def test_set_tabular_path_and_columns(tmp_path):
    path = tmp_path / "data with space.csv"
    config = load_config(TabularConfig, None, [f"data.path={path}", "data.feature_columns=[x1, x2]",
                                               "data.label_column=y"])
    assert config.data.path == str(path)
    assert config.data.feature_columns == ["x1", "x2"] and config.data.label_column == "y"


def test_ints_given_as_floats_are_accepted():
    config = load_config(SyntheticConfig, None, ["student.train.epochs=3.0", "search.trials=7.0"])
    assert config.student.train.epochs == 3 and type(config.student.train.epochs) is int
    assert config.search.trials == 7 and type(config.search.trials) is int


def test_later_overrides_win_and_siblings_are_kept():
    config = load_config(SyntheticConfig, None, ["student.train.epochs=3", "student.train.epochs=4"])
    assert config.student.train.epochs == 4
    assert config.student.train.lr == TrainConfig().lr and config.teacher.train.epochs == 100


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("student.train.epochz=3", "unknown key student.train.epochz; valid keys here: batch_size, device, epochs"),
        ("teacher.widht=3", "unknown key teacher.widht; valid keys here: hidden, outputs, outputs_kind, train"),
        ("foo=1", "unknown key foo; valid keys here: accelerator, benchmark, cache_teacher, data"),
        ("foo.bar=1", "unknown key foo in --set 'foo.bar=1'"),
        ("data.pth=/x.csv", "unknown key data.pth; valid keys here: data_seed, dim, num_classes"),
        ("methods=[{name: a, loss: kl, prams: {}}]", "unknown key methods[0].prams"),
    ],
)
def test_unknown_keys_name_the_full_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(SyntheticConfig, None, [override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("student.train.epochs=abc", "student.train.epochs: expected an integer, got 'abc'"),
        ("student.train.epochs=3.5", "student.train.epochs: expected an integer, got 3.5"),
        ("student.train.epochs=true", "student.train.epochs: expected an integer, got True"),  # bool is not an int
        ("teacher.train.seed=false", "teacher.train.seed: expected an integer, got False"),
        ("student.train.patience=yes", "student.train.patience: expected an integer, got True"),
        ("seeds=[a]", "seeds[0]: expected an integer, got 'a'"),
        ("seeds=3", "seeds: expected a list, got 3"),
        ("student.hidden=[8, x]", "student.hidden[1]: expected an integer, got 'x'"),
        ("teacher.train.lr=fast", "teacher.train.lr: expected a number, got 'fast'"),
        ("teacher.train.lr=true", "teacher.train.lr: expected a number, got True"),
        ("search.strategy=[3]", "search.strategy: expected str, got [3]"),
        ("student=3", "student: expected a mapping for ModelSpec, got 3"),
        ("data.sizes=[1, 2]", "data.sizes: expected a mapping, got [1, 2]"),
    ],
)
def test_wrong_types_name_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(SyntheticConfig, None, [override])


@pytest.mark.parametrize(
    ("text", "message"),
    [("noequals", "expected key=value"), ("a..b=1", "expected a dotted key"), ("=1", "expected a dotted key"),
     ("seeds=[1", "cannot parse value")],
)
def test_malformed_overrides(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_override(text)


def test_parse_override_values_are_yaml():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=3.0") == (["a"], 3.0)
    assert parse_override("a=[0,1]") == (["a"], [0, 1])
    assert parse_override("path=/x/y=z.csv") == (["path"], "/x/y=z.csv")  # split at the first '='
    assert parse_override("a=") == (["a"], "")


@pytest.mark.parametrize(("override", "expected"), [("data.sizes.test=abc", None), ("data.sizes.test=100.0", 100)])
def test_dict_values_are_checked(override, expected):
    """``data.sizes`` is ``dict[str, int]``, yet any value passes: 'abc' only fails in the pipeline's
    prepare_data, and 100.0 stays a float (unlike int fields, where 3.0 becomes 3)."""
    if expected is None:
        with pytest.raises(ConfigError, match=re.escape("data.sizes.test")):
            load_config(SyntheticConfig, None, [override])
    else:
        value = load_config(SyntheticConfig, None, [override]).data.sizes["test"]
        assert value == expected and type(value) is int


def test_out_of_range_values_name_the_full_key():
    with pytest.raises(ValueError, match=re.escape("student.train.epochs")):
        load_config(SyntheticConfig, None, ["student.train.epochs=0"])


# --------------------------------------------------------------------------- YAML files


def test_yaml_file_is_merged_then_overrides_apply(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "student:\n  train:\n    epochs: 3\n    lr: 0.01\n"
        "seeds: [4, 5]\n"
        "methods:\n  - {name: kl, loss: kl}\n  - {name: smooth, loss: label_smoothing, params: {delta: 0.2}}\n"
        "data:\n  sizes: {teacher_train: 10, distill: 20, validation: 5, test: 5}\n"
    )
    config = load_config(SyntheticConfig, path)
    assert config.student.train.epochs == 3 and config.student.train.lr == 0.01
    assert config.student.train.batch_size == TrainConfig().batch_size  # siblings keep their defaults
    assert config.student.hidden == [128, 128] and config.teacher.train.epochs == 100
    assert config.seeds == [4, 5]
    assert config.methods == [MethodSpec("kl", "kl"), MethodSpec("smooth", "label_smoothing", {"delta": 0.2})]
    assert config.data.sizes == {"teacher_train": 10, "distill": 20, "validation": 5, "test": 5}
    assert config.data.dim == 30
    over = load_config(SyntheticConfig, path, ["student.train.epochs=9", "seeds=[1]"])
    assert over.student.train.epochs == 9 and over.seeds == [1] and over.student.train.lr == 0.01


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("student:\n  train:\n    epochz: 3\n", "unknown key student.train.epochz"),
        ("student:\n  train:\n    epochs: abc\n", "student.train.epochs: expected an integer, got 'abc'"),
        ("seeds: [0, x]\n", "seeds[1]: expected an integer, got 'x'"),
        ("- 1\n- 2\n", "expected a mapping at the top level"),
        ("student: [1\n", "not valid YAML"),
    ],
)
def test_bad_yaml_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(SyntheticConfig, path)


def test_missing_and_empty_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(SyntheticConfig, tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(SyntheticConfig, tmp_path / "empty.yaml") == SyntheticConfig()


# --------------------------------------------------------------------------- round trips and the grid


@pytest.mark.parametrize("benchmark", sorted(BENCHMARKS))
@pytest.mark.parametrize("preset", ["default", "quick"])
def test_config_from_dict_round_trip(benchmark, preset):
    cls = config_class(benchmark)
    config = cls.quick() if preset == "quick" else cls()
    data = json.loads(json.dumps(to_dict(config)))
    back = config_from_dict(data)
    assert type(back) is cls and back == config
    assert to_dict(back) == to_dict(config)
    # Through a protobuf Struct (KFP parameters) every integer becomes a float.
    floated = config_from_dict(_ints_as_floats(data))
    assert floated == config
    assert type(floated.student.train.epochs) is int and all(type(s) is int for s in floated.seeds)


def test_config_from_dict_is_strict():
    data = to_dict(SyntheticConfig.quick())
    with pytest.raises(ConfigError, match="unknown benchmark ''"):
        config_from_dict({k: v for k, v in data.items() if k != "benchmark"})
    with pytest.raises(ConfigError, match=re.escape("unknown key search.bogus")):
        config_from_dict({**data, "search": {**data["search"], "bogus": 1}})
    with pytest.raises(ConfigError, match=re.escape("unknown key data.path")):  # a tabular key in a synthetic config
        config_from_dict({**data, "data": {**data["data"], "path": "x.csv"}})
    with pytest.raises(ConfigError, match="expected a mapping for SyntheticConfig"):
        from_dict(SyntheticConfig, [1, 2])


def test_runs_grid():
    config = dataclasses.replace(SyntheticConfig(), seeds=[0, 1])
    runs = config.runs()
    assert runs == [{"method": m.name, "seed": s} for m in default_methods() for s in (0, 1)]
    assert len(runs) == 10 and runs[:3] == [{"method": "ptloss", "seed": 0}, {"method": "ptloss", "seed": 1},
                                            {"method": "kl", "seed": 0}]
    assert SyntheticConfig.quick().runs() == [{"method": "ptloss", "seed": 0}, {"method": "kl", "seed": 0}]
    assert json.loads(json.dumps(runs)) == runs
    assert dataclasses.replace(config, seeds=[]).runs() == []


def test_method_lookup():
    config = SyntheticConfig()
    assert config.method("temperature") == MethodSpec("temperature", "kl", {"temperature": 2.0})
    with pytest.raises(ConfigError, match=r"methods: no method named 'nope'; have \['ptloss', 'kl'"):
        config.method("nope")


# --------------------------------------------------------------------------- the CLI, before any pipeline


@pytest.fixture
def data_dir(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    n = 30
    base = {"x1": rng.normal(size=n), "x2": rng.normal(size=n)}
    pd.DataFrame({**base, "label": ["a", "b", "c"] * 10}).to_csv(folder / "good.csv", index=False)
    pd.DataFrame({**base, "target": ["a", "b"] * 15}).to_csv(folder / "no_label.csv", index=False)
    pd.DataFrame({"x1": base["x1"], "x2": ["low", "high"] * 15, "label": ["a", "b"] * 15}).to_csv(
        folder / "text_feature.csv", index=False)
    pd.DataFrame({**base, "label": ["a"] * n}).to_csv(folder / "one_class.csv", index=False)
    (folder / "bad.yaml").write_text("student:\n  train:\n    epochz: 3\n")
    return folder


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty working directory, where a started pipeline would create runs/ and mlflow.db."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder


#: Bad data: `run` reads local data up front; compile, submit and schedule read none (test_compile).
BAD_DATA = [
    pytest.param(["--set", "data.path={data}/nope.csv"], "nope.csv: file not found", id="data-file-not-found"),
    pytest.param(["--set", "data.path={data}/no_label.csv"], "no label column 'label'", id="missing-label-column"),
    pytest.param(["--set", "data.path={data}/text_feature.csv"],
                 re.compile(r"text_feature\.csv: feature column 'x2' has dtype \w+; expected numbers"),
                 id="non-numeric-feature"),
    pytest.param(["--set", "data.path={data}/one_class.csv"], "label column 'label' has a single class",
                 id="single-class"),
    pytest.param(["--set", "data.path={data}/good.csv", "--set", "data.feature_columns=[x1, x9]"],
                 "feature column(s) ['x9'] not found", id="missing-feature-column"),
]
BAD_CONFIG = [
    pytest.param([], "data.path: the tabular benchmark needs a CSV or parquet file", id="missing-data-path"),
    pytest.param(["--set", "data.path=gs:/bucket/table.csv"], "data.path: malformed storage URI 'gs:/bucket/table.csv'",
                 id="malformed-uri"),
    pytest.param(["--set", "data.path={data}/good.csv", "--set", "student.train.epochs=abc"],
                 "student.train.epochs: expected an integer, got 'abc'", id="wrong-type"),
    pytest.param(["--set", "data.path={data}/good.csv", "--set", "student.train.epochz=3"],
                 "unknown key student.train.epochz", id="unknown-key"),
    pytest.param(["--set", "data.path={data}/good.csv", "--set", "seeds=[a]"],
                 "seeds[0]: expected an integer, got 'a'", id="wrong-list-item"),
    pytest.param(["--set", "data.path={data}/good.csv", "--config", "{data}/bad.yaml"],
                 "unknown key student.train.epochz", id="bad-yaml"),
    pytest.param(["--set", "data.path={data}/good.csv", "--config", "{data}/missing.yaml"],
                 "missing.yaml: file not found", id="missing-yaml"),
    pytest.param(["--set", "nodots"], "--set 'nodots': expected key=value", id="malformed-set"),
]


@pytest.mark.parametrize(("command", "args", "message"),
                         [("run", *p.values) for p in BAD_DATA + BAD_CONFIG]
                         + [("compile", *p.values) for p in BAD_CONFIG],
                         ids=[f"run-{p.id}" for p in BAD_DATA + BAD_CONFIG] + [f"compile-{p.id}" for p in BAD_CONFIG])
def test_cli_rejects_bad_config_or_data_before_any_pipeline(command, args, message, data_dir, workdir, capsys):
    argv = [command, "tabular", *(a.format(data=data_dir) for a in args)]
    if command == "compile":
        argv += ["-o", str(workdir / "pipeline.yaml")]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing started, not even the run banner
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith(f"ptdistill {command}: error: ")
    assert (message.search(err) if isinstance(message, re.Pattern) else message in err), err
    assert list(workdir.iterdir()) == []  # no runs/, mlflow.db, mlruns/ or compiled file


def test_cli_rejects_unknown_benchmark(workdir, capsys):
    assert main(["run", "nope"]) == 2
    err = capsys.readouterr().err
    assert err == "ptdistill run: error: unknown benchmark 'nope'; available: synthetic, tabular, cola, mnli, mrpc, rte, sst2, boolq, rotten-tomatoes, text\n"
    assert list(workdir.iterdir()) == []


# Bad values that load_config accepts: the CLI should still stop them before a pipeline starts.
# run_local is replaced by a stub so that, while the bug stands, these tests fail in a second
# instead of running (and failing) a pipeline for a minute.
LATE_FAILURES = [
    pytest.param("methods=[{name: x, loss: no_such_loss}]", "unknown loss 'no_such_loss'", id="unknown-loss"),
    pytest.param("data.sizes={teacher_train: 100}", "data.sizes: missing", id="synthetic-sizes-missing-splits"),
    pytest.param("task_metric=bogus", "task_metric", id="unknown-task-metric"),
    # A local run trains here: a precision this machine's device cannot run fails now, not in a task.
    *[pytest.param(override, message, id=name, marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA"))
      for name, override, message in [
          ("fp16-student", "student.train.precision=fp16",
           "methods (ptloss): student.train.precision: 'fp16' needs CUDA"),
          ("fp16-teacher", "teacher.train.precision=fp16", "teacher.train.precision: 'fp16' needs CUDA"),
          ("fp16-method", "methods=[{name: half, loss: kl, train: {precision: fp16}}]",
           "methods (half): student.train.precision: 'fp16' needs CUDA")]],
]


def _refused_before_the_pipeline(override: str, capsys, monkeypatch) -> tuple[str, str]:
    """``ptdistill run synthetic --quick --set override`` exits 2 without starting the pipeline; (stdout, stderr)."""
    import pipelines.local

    def pipeline_started(*args, **kwargs):
        raise AssertionError("run_local was called: the pipeline started")

    monkeypatch.setattr(pipelines.local, "run_local", pipeline_started)
    assert main(["run", "synthetic", "--quick", "--set", override]) == 2
    return capsys.readouterr()


@pytest.mark.parametrize(("override", "message"), LATE_FAILURES)
def test_cli_rejects_values_that_would_fail_inside_the_pipeline(override, message, workdir, capsys, monkeypatch):
    _, err = _refused_before_the_pipeline(override, capsys, monkeypatch)
    assert err.count("\n") == 1 and message in err, err


def test_lr_grid_expands_methods_into_variants():
    config = SyntheticConfig(methods=default_methods()[:2], seeds=[0, 1], lr_grid=[2e-5, 5e-5])
    assert [r["method"] for r in config.runs()[::2]] == ["ptloss-lr2e-05", "ptloss-lr5e-05", "kl-lr2e-05",
                                                         "kl-lr5e-05"]
    assert len(config.runs()) == 8 and {r["seed"] for r in config.runs()} == {0, 1}
    variant = config.method("kl-lr5e-05")
    assert (variant.loss, variant.train) == ("kl", {"lr": 5e-5}) and config.methods[1].train == {}
    assert config.student_train(variant).lr == 5e-5
    with pytest.raises(ConfigError, match="no method named 'kl'; have \\['ptloss-lr2e-05'"):
        config.method("kl")  # with a grid, only the variants are trained
    config.validate(3)
    with pytest.raises(ConfigError, match=re.escape("lr_grid[0]: expected a finite learning rate > 0, got 0.0")):
        dataclasses.replace(config, lr_grid=[0.0]).validate(3)


def test_report_picks_each_methods_lr_on_validation():
    from ptdistill.steps.report import lr_choices, results_table

    config = SyntheticConfig(methods=default_methods()[:2], seeds=[0, 1], lr_grid=[2e-5, 5e-5])
    val = {"ptloss-lr2e-05": 0.7, "ptloss-lr5e-05": 0.8, "kl-lr2e-05": 0.9, "kl-lr5e-05": 0.6}
    rows = [{"method": r["method"], "seed": r["seed"], "val_task": val[r["method"]] + 0.01 * r["seed"],
             "test_accuracy": 0.5, "test_nll": 1.0, "test_ece": 0.1} for r in config.runs()]
    lines = lr_choices(config, rows, results_table(rows, "accuracy"))
    assert lines[2:] == ["- ptloss: lr 5e-05 (validation 0.8050); test accuracy 0.5000 ± 0.0000",
                         "- kl: lr 2e-05 (validation 0.9050); test accuracy 0.5000 ± 0.0000"]
    assert lr_choices(SyntheticConfig(), rows, results_table(rows, "accuracy")) == []


@pytest.fixture
def sentences_csv(tmp_path) -> Path:
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"sentence": [f"review {i}" for i in range(20)], "label": ["neg", "pos"] * 10}).to_csv(path,
                                                                                                    index=False)
    return path


TEXT_FAILURES = [
    pytest.param([], "no text column 'text'", id="missing-text-column"),
    pytest.param(["data.text_columns=[sentence]", "data.class_names=[neg, neutral]"], "'pos'", id="unknown-label"),
    pytest.param(["data.text_columns=[sentence]", "teacher.model.kind=seq2seq"],
                 "teacher.prompt and teacher.label_words", id="generative-teacher-without-verbalizer"),
    pytest.param(["data.text_columns=[sentence]", "teacher.model.kind=seq2seq", "teacher.prompt='r: {text_a}'",
                  "teacher.label_words=[bad, good, meh]"], "teacher.label_words: expected 2 words", id="label-words-per-class"),
    pytest.param(["data.text_columns=[sentence]", "data.fractions={teacher_train: 0.02, distill: 0.48,"
                  " validation: 0.25, test: 0.25}"], "would be empty", id="empty-split"),
]


@pytest.mark.parametrize(("overrides", "message"), TEXT_FAILURES)
def test_text_cli_rejects_bad_data_before_anything_starts(overrides, message, sentences_csv, workdir, capsys,
                                                          monkeypatch):
    import pipelines.local

    monkeypatch.setattr(pipelines.local, "run_local", lambda *a, **k: pytest.fail("the pipeline started"))
    # The config is checked before the data: a classification teacher (no prompt needed) unless a case sets one.
    argv = ["run", "text", "--set", f"data.path={sentences_csv}", "--set", "teacher.model.kind=classification"]
    for override in overrides:
        argv += ["--set", override]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert list(workdir.iterdir()) == []


def test_text_verbalizer_defaults_to_the_tasks_t5_prompt():
    verbalizer = default_config("mnli").verbalizer()
    assert verbalizer.prompt == "mnli hypothesis: {text_b} premise: {text_a}"
    assert verbalizer.label_words == ("entailment", "neutral", "contradiction")


METHOD_ERRORS = [
    pytest.param(MethodSpec("x", "kl", targets="teacher_probs"), "targets: expected one of teacher, labels, p_star",
                 id="unknown-targets"),
    pytest.param(MethodSpec("x", "kl", train={"patiencee": 3}), "patiencee", id="unknown-train-key"),
    pytest.param(MethodSpec("x", "kl", train={"lr": -1.0}), "lr", id="bad-train-value"),
    pytest.param(MethodSpec("x", "ptloss", {"rank": 500}), r"params.rank: expected an integer in \[0, 499\]",
                 id="rank-out-of-range"),
    pytest.param(MethodSpec("x", "ptloss", {"order": 6}), r"params.order: expected an integer in \[1, 5\]",
                 id="order-out-of-range"),
    pytest.param(MethodSpec("x", "ptloss", {"random_seed": 1}), "random_seed needs an order", id="random-no-order"),
    pytest.param(MethodSpec("x", "ptloss", {"order": 2, "eps": [[0.1]] * 3}), "give eps or order, not both",
                 id="eps-and-order"),
]


@pytest.mark.parametrize(("method", "match"), METHOD_ERRORS)
def test_method_variants_are_checked(method, match):
    with pytest.raises(ConfigError, match=match):
        SyntheticConfig(methods=[method]).validate(3)


def test_oracle_needs_a_known_posterior():
    SyntheticConfig(methods=[MethodSpec("oracle", "kl", targets="p_star")]).validate(3)
    with pytest.raises(ConfigError, match="'p_star' .* synthetic"):
        TabularConfig(methods=[MethodSpec("oracle", "kl", targets="p_star")]).validate(3)


# --------------------------------------------------------------------------- YAML 1.2 numbers


@pytest.mark.parametrize(("text", "expected"), [("2e-5", 2e-5), ("1E3", 1000.0), ("-3e+2", -300.0), ("1.5e5", 1.5e5),
                                                ("5e-5", 5e-5), (".5e-3", 5e-4)])
def test_exponent_numbers_are_floats_in_set_and_files(tmp_path, text, expected):
    """YAML 1.1 reads ``2e-5`` as a string; every float key takes it, from --set and from a file, nested too."""
    value = load_config(SyntheticConfig, None, [f"search.low={text}"]).search.low
    assert value == expected and type(value) is float
    grid = load_config(SyntheticConfig, None, [f"lr_grid=[{text},3e-5]"]).lr_grid
    assert grid == [expected, 3e-5] and all(type(v) is float for v in grid)
    path = tmp_path / "exp.yaml"
    path.write_text(f"lr_grid: [{text}, 5e-5]\nsearch: {{low: {text}}}\n"
                    f"methods:\n  - {{name: kl, loss: kl, train: {{lr: {text}}}}}\n")
    config = load_config(SyntheticConfig, path)
    assert config.lr_grid == [expected, 5e-5] and config.search.low == expected
    assert config.methods[0].train == {"lr": expected} and type(config.methods[0].train["lr"]) is float


def test_readme_lr_grid_example_builds_the_variants():
    config = load_config(SyntheticConfig, None, ["lr_grid=[2e-5,3e-5,5e-5]"])
    assert config.lr_grid == [2e-5, 3e-5, 5e-5]
    assert [v.name for v in config.variants()][:3] == ["ptloss-lr2e-05", "ptloss-lr3e-05", "ptloss-lr5e-05"]


def test_string_keys_keep_numbers_as_written(tmp_path):
    """A str-typed key given a number keeps the text (a column named 2e-5 or 1), not float('2e-5')."""
    config = load_config(TabularConfig, None, ["data.label_column=2e-5", "data.feature_columns=[1, 1E3, x]"])
    assert config.data.label_column == "2e-5"
    assert config.data.feature_columns == ["1", "1E3", "x"]
    path = tmp_path / "exp.yaml"
    path.write_text("data:\n  label_column: '2e-5'\n  path: 007\n")
    config = load_config(TabularConfig, path)
    assert (config.data.label_column, config.data.path) == ("2e-5", "007")


def test_yaml_float_resolver_is_not_global():
    import yaml

    assert yaml.safe_load("2e-5") == "2e-5"  # PyYAML's own loader is left as it is
    assert parse_override("a=2e-5") == (["a"], 2e-5)
    assert parse_override("a=e5") == (["a"], "e5") and parse_override("a=1e") == (["a"], "1e")


# --------------------------------------------------------------------------- fan-out items name distinct students

KL, PT = MethodSpec("kl", "kl"), MethodSpec("ptloss", "ptloss")
FAN_OUT_CLASHES = [
    pytest.param({"seeds": [0, 0]}, "seeds: duplicate seed 0 (2 times) in [0, 0] (two items would publish to the same"
                 " students/<method>-seed<seed> and overwrite each other)", id="duplicate-seed"),
    pytest.param({"seeds": [1, 2, 1, 2]}, "seeds: duplicate seed 1 (2 times); 2 (2 times) in [1, 2, 1, 2]",
                 id="two-duplicate-seeds"),
    pytest.param({"seeds": [0, -1]}, "seeds[1]: expected an integer in [0, 4294967295], got -1", id="negative-seed"),
    pytest.param({"seeds": [2**32]}, "seeds[0]: expected an integer in [0, 4294967295], got 4294967296",
                 id="seed-too-large"),
    pytest.param({"methods": [KL, KL]}, "methods: duplicate method name 'kl' (2 times) in ['kl', 'kl'] (names are"
                 " compared ignoring case: they name the store keys students/<method>-seed<seed> and the MLflow runs)",
                 id="duplicate-method"),
    pytest.param({"methods": [KL, MethodSpec("KL", "kl", {"temperature": 2.0})]},
                 "methods: duplicate method name 'kl' and 'KL' in ['kl', 'KL']", id="method-names-differ-by-case"),
    pytest.param({"methods": [MethodSpec("kl/t2", "kl")]}, "methods[0].name: expected letters, digits, '_', '.' or"
                 " '-' (it names the student's store key and MLflow run), got 'kl/t2'", id="slash-in-method-name"),
    pytest.param({"methods": [MethodSpec("", "kl")]}, "methods[0].name: expected letters", id="empty-method-name"),
    pytest.param({"methods": [KL], "lr_grid": [2e-5, 2e-5]}, "lr_grid: duplicate learning rate 2e-05 (2 times) in"
                 " [2e-05, 2e-05] (rates are told apart by their variant name <method>-lr<rate>, 6 significant"
                 " digits)", id="duplicate-lr"),
    pytest.param({"methods": [KL], "lr_grid": [2e-5, 2.0000001e-5]},
                 "lr_grid: duplicate learning rate 2e-05 and 2.0000001e-05", id="lrs-with-one-variant-name"),
]


@pytest.mark.parametrize(("fields", "message"), FAN_OUT_CLASHES)
def test_fan_out_items_that_would_share_a_student_are_rejected(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        SyntheticConfig(**fields).validate(3)


def test_distinct_fan_out_items_pass():
    config = SyntheticConfig(methods=[KL, PT, MethodSpec("kl_T2.0-b", "kl", {"temperature": 2.0})], seeds=[0, 7],
                             lr_grid=[2e-5, 3e-5])
    config.validate(3)
    keys = [f"{r['method']}-seed{r['seed']}" for r in config.runs()]
    assert len(keys) == 12 and len({k.lower() for k in keys}) == 12


def test_cli_rejects_duplicate_seeds_before_any_pipeline(workdir, capsys):
    assert main(["run", "synthetic", "--quick", "--set", "seeds=[0,0]"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ("ptdistill run: error: seeds: duplicate seed 0 (2 times) in [0, 0] (two items would"
                                 " publish to the same students/<method>-seed<seed> and overwrite each other)\n")
    assert list(workdir.iterdir()) == []


def test_search_max_flips_is_a_fraction():
    assert SyntheticConfig().search.max_flips == 0.5
    assert load_config(SyntheticConfig, None, ["search.max_flips=1"]).search.max_flips == 1.0
    with pytest.raises(ConfigError, match=re.escape("search.max_flips: expected a fraction in [0, 1], got 1.5")):
        load_config(SyntheticConfig, None, ["search.max_flips=1.5"]).validate(3)


# --------------------------------------------------------------------------- issue 11: bad values caught at config time

SEED_RANGE = "expected an integer in [0, 4294967295]"
CONFIG_TIME_ERRORS = [
    pytest.param("search.seed=-5", f"search.seed: {SEED_RANGE}, got -5", id="search-seed"),
    pytest.param("data.data_seed=-5", f"data.data_seed: {SEED_RANGE}, got -5", id="data-seed"),
    pytest.param("data.split_seed=-5", f"data.split_seed: {SEED_RANGE}, got -5", id="split-seed"),
    pytest.param("data.split_seed=4294967296", f"data.split_seed: {SEED_RANGE}, got 4294967296", id="split-seed-big"),
    pytest.param("search.high=.inf", "search.high: expected a finite number, got inf", id="search-high-inf"),
    pytest.param("search.low=-.inf", "search.low: expected a finite number, got -inf", id="search-low-inf"),
    pytest.param("search.max_flips=.nan", "search.max_flips: expected a finite number, got nan", id="max-flips-nan"),
    pytest.param("data.sigma=.nan", "data.sigma: expected a finite number, got nan", id="sigma-nan"),
    pytest.param("student.train.lr=.inf", "student.train.lr: expected a finite number, got inf", id="lr-inf"),
    pytest.param("lr_grid=[1e-3, .inf]", "lr_grid[1]: expected a finite number, got inf", id="lr-grid-inf"),
    pytest.param("lr_grid=[1e-3, -1e-3]", "lr_grid[1]: expected a finite learning rate > 0, got -0.001",
                 id="lr-grid-negative"),
    pytest.param("methods=[{name: pt, loss: ptloss, params: {eps: [[0.1], [0.2]]}}]",
                 "methods[0] (pt).params.eps: expected 3 rows (one per class) in shape (C, M), got (2, 1)",
                 id="eps-rows"),
    pytest.param("methods=[{name: pt, loss: ptloss, params: {eps: [0.1, 0.2]}}]",
                 "methods[0] (pt): eps: expected shape (C, M), got (2,)", id="eps-1d"),
]


@pytest.mark.parametrize(("override", "message"), CONFIG_TIME_ERRORS)
def test_cli_rejects_bad_values_at_config_time(override, message, workdir, capsys, monkeypatch):
    out, err = _refused_before_the_pipeline(override, capsys, monkeypatch)
    assert out == "" and err == f"ptdistill run: error: {message}\n"
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("cls", [TabularConfig, TextConfig])
def test_split_seed_of_own_data_is_checked_with_its_key(cls):
    with pytest.raises(ConfigError, match=re.escape(f"data.split_seed: {SEED_RANGE}, got -1")):
        load_config(cls, None, ["data.split_seed=-1"])


def test_python_api_search_range_and_lr_grid_are_finite():
    config = SyntheticConfig()
    config.search.high = float("inf")
    with pytest.raises(ConfigError, match=re.escape("search.low/high: expected finite numbers with low < high,"
                                                    " got -1.0 and inf")):
        config.validate(3)
    with pytest.raises(ConfigError, match=re.escape("lr_grid[0]: expected a finite learning rate > 0, got inf")):
        SyntheticConfig(lr_grid=[float("inf")]).validate(3)


def test_ptloss_eps_of_the_right_shape_passes():
    SyntheticConfig(methods=[MethodSpec("pt", "ptloss", {"eps": [[0.1, 0.0]] * 3})]).validate(3)


@pytest.mark.parametrize(("text", "message"), [
    ("seeds: [0, 1]\nsearch:\n  trials: 3\nseeds: [2]\n", "duplicate key 'seeds' at lines 1 and 4"),
    ("student:\n  hidden: [4]\nstudent:\n  hidden: [8]\n", "duplicate key 'student' at lines 1 and 3"),
    ("student:\n  train:\n    epochs: 3\n    lr: 0.1\n    epochs: 4\n", "duplicate key 'epochs' at lines 3 and 5"),
    ("methods:\n  - {name: kl, loss: kl, name: kl2}\n", "duplicate key 'name' at lines 2 and 2"),
])
def test_duplicate_yaml_keys_are_rejected(tmp_path, text, message):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(SyntheticConfig, path)
    assert str(err.value) == f"--config {path}: not valid YAML ({message}; a key may appear once in a mapping)"


def test_duplicate_keys_in_a_set_value_are_rejected():
    with pytest.raises(ConfigError, match=re.escape("duplicate key 'x' at lines 1 and 1")):
        parse_override("data.sizes={x: 1, x: 2}")


def test_yaml_merge_keys_still_work():
    assert parse_override("a={<<: {b: 1}, c: 2}") == (["a"], {"b": 1, "c": 2})


def test_config_that_is_a_directory_or_not_utf8_names_the_file(tmp_path, workdir, capsys):
    folder = tmp_path / "adir.yaml"
    folder.mkdir()
    utf16 = tmp_path / "u16.yaml"
    utf16.write_bytes("seeds: [0]\n".encode("utf-16"))
    latin1 = tmp_path / "l1.yaml"
    latin1.write_bytes("seeds: [0]  # café\n".encode("latin-1"))
    expected = {
        folder: f"{folder}: is a directory; expected a file",
        utf16: f"{utf16}: not UTF-8 text: byte 0xff at offset 0 is not valid UTF-8 (it starts with a UTF-16"
               " byte-order mark); re-save the file as UTF-8",
        latin1: f"{latin1}: not UTF-8 text: byte 0xe9 at offset 17 is not valid UTF-8; re-save the file as UTF-8",
    }
    for path, message in expected.items():
        assert main(["run", "synthetic", "--quick", "--config", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"ptdistill run: error: --config {message}\n"
    assert list(workdir.iterdir()) == []


def test_config_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfseeds: [3]\n")
    assert load_config(SyntheticConfig, path).seeds == [3]
