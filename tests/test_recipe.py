"""The ``recipe`` key: what each recipe sets, the per-benchmark defaults, the user's keys winning over
the recipe, errors, the report line and the parent run's tag."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptdistill.config import ConfigError, to_dict
from ptdistill.experiments import (
    BENCHMARKS,
    RECIPES,
    MethodSpec,
    apply_recipe,
    build_config,
    config_from_dict,
    default_config,
)
from ptdistill.families.mlp.training import TrainConfig
from ptdistill.families.text.trainer import TextTrainConfig

RECIPE_KEYS = {"teacher.train.select", "teacher.train.patience", "student.train.select", "student.train.patience"}
#: What each recipe sets, by family (MLP: 100-epoch runs, patience 5; text: 2-3 epoch fine-tunes, patience 1).
EXPECTED = {
    ("paper", "mlp"): {"teacher.train.select": "last", "teacher.train.patience": None,
                       "student.train.select": "last", "student.train.patience": None},
    ("best", "mlp"): {"teacher.train.select": "nll", "teacher.train.patience": 5,
                      "student.train.select": "nll", "student.train.patience": 5},
    ("paper", "text"): {"teacher.train.select": "last", "teacher.train.patience": None,
                        "student.train.select": "last", "student.train.patience": None},
    ("best", "text"): {"teacher.train.select": "nll", "teacher.train.patience": 1,
                       "student.train.select": "nll", "student.train.patience": 1},
}
DEFAULTS = {"synthetic": "paper", "tabular": "best", "cola": "paper", "mnli": "paper", "mrpc": "paper",
            "rte": "paper", "sst2": "paper", "boolq": "paper", "rotten-tomatoes": "best", "text": "best"}


def _flat(data: dict, prefix: str = "") -> dict:
    """A nested dict as dotted key -> value (lists and other leaves kept whole)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _recipe_values(config) -> dict:
    return {key: value for key, value in _flat(to_dict(config)).items() if key in RECIPE_KEYS}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize(("benchmark", "family"), [("synthetic", "mlp"), ("tabular", "mlp"),
                                                   ("rotten-tomatoes", "text"), ("sst2", "text")])
def test_each_recipe_sets_every_key_it_claims(benchmark, family, recipe):
    for quick in (False, True):
        via_set = build_config(benchmark, [f"recipe={recipe}"], quick=quick)
        via_python = apply_recipe(default_config(benchmark, quick=quick), recipe)
        for config in (via_set, via_python):
            assert config.recipe == recipe
            assert _recipe_values(config) == EXPECTED[recipe, family]
            assert RECIPES[recipe].keys(config) == EXPECTED[recipe, family]


def test_patience_lives_with_each_family():
    assert TrainConfig.early_stopping_patience == 5 and TextTrainConfig.early_stopping_patience == 1
    assert "early_stopping_patience" not in to_dict(TrainConfig())  # a class constant, not a config key


def test_every_benchmark_has_its_default_recipe_full_and_quick():
    assert set(DEFAULTS) == set(BENCHMARKS)  # a new benchmark must be added here with its default
    for benchmark, recipe in DEFAULTS.items():
        family = BENCHMARKS[benchmark][0].family
        for quick in (False, True):
            for config in (default_config(benchmark, quick=quick), build_config(benchmark, quick=quick)):
                assert config.recipe == recipe, (benchmark, quick)
                assert _recipe_values(config) == EXPECTED[recipe, family], (benchmark, quick)


def test_best_on_synthetic_changes_exactly_the_recipe_keys():
    paper, best = _flat(to_dict(build_config("synthetic"))), _flat(to_dict(build_config("synthetic", ["recipe=best"])))
    assert paper.keys() == best.keys()
    assert {key for key in paper if paper[key] != best[key]} == RECIPE_KEYS | {"recipe"}
    # and back: paper on a best-by-default benchmark undoes every key
    tabular = build_config("tabular", ["recipe=paper"])
    assert tabular == apply_recipe(default_config("tabular"), "paper") and tabular.student.train == TrainConfig()


def test_explicit_set_keys_win_over_the_recipe_in_either_order():
    for overrides in (["recipe=best", "student.train.patience=3"], ["student.train.patience=3", "recipe=best"]):
        config = build_config("synthetic", overrides)
        assert (config.recipe, config.student.train.select, config.student.train.patience) == ("best", "nll", 3)
        assert (config.teacher.train.select, config.teacher.train.patience) == ("nll", 5)
    # a key the paper recipe would reject under best's patience: the user's select=accuracy stays
    config = build_config("tabular", ["recipe=paper", "teacher.train.select=accuracy", "teacher.train.patience=2"])
    assert (config.teacher.train.select, config.teacher.train.patience) == ("accuracy", 2)
    assert (config.student.train.select, config.student.train.patience) == ("last", None)


def test_yaml_keys_win_over_the_recipe_and_set_wins_over_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("recipe: best\nteacher:\n  train:\n    patience: 8\n    epochs: 50\n")
    config = build_config("synthetic", [], path)
    assert config.recipe == "best"
    assert (config.teacher.train.select, config.teacher.train.patience, config.teacher.train.epochs) == ("nll", 8, 50)
    assert (config.student.train.select, config.student.train.patience) == ("nll", 5)
    config = build_config("synthetic", ["recipe=paper", "teacher.train.select=nll"], path)
    assert config.recipe == "paper"
    assert (config.teacher.train.select, config.teacher.train.patience) == ("nll", 8)  # the YAML's patience kept
    assert (config.student.train.select, config.student.train.patience) == ("last", None)


def test_a_config_object_as_base_switches_recipe_and_keeps_its_other_keys():
    base = default_config("synthetic", quick=True)
    base.seeds = [4, 5]
    config = build_config(base, ["recipe=best"])
    assert config.seeds == [4, 5] and config.recipe == "best" and config.student.train.patience == 5
    assert base.recipe == "paper" and base.student.train.patience is None  # the base is left as it was
    assert build_config(base) == base


def test_cli_and_remote_build_the_same_config(tmp_path):
    from pipelines.remote import resolve_config

    path = tmp_path / "run.yaml"
    path.write_text("student:\n  train:\n    patience: 2\n")
    for benchmark in ("synthetic", "tabular"):
        expected = build_config(benchmark, ["recipe=best"], path, quick=True)
        assert resolve_config(benchmark, ["recipe=best"], path, quick=True) == expected
        assert expected.student.train.patience == 2 and expected.teacher.train.patience == 5


def test_json_round_trip_keeps_the_recipe():
    for benchmark in ("synthetic", "tabular", "rotten-tomatoes"):
        config = build_config(benchmark, ["recipe=best", "student.train.patience=2"])
        again = config_from_dict(to_dict(config))
        assert again == config and again.recipe == "best" and again.student.train.patience == 2


@pytest.mark.parametrize("value", ["good", "Best", "5", "null"])
def test_an_unknown_recipe_is_refused_naming_key_value_and_choices(value, tmp_path):
    got = {"good": "'good'", "Best": "'Best'", "5": "5", "null": "None"}[value]
    message = f"recipe: expected one of paper, best, got {got}"
    with pytest.raises(ConfigError) as caught:
        build_config("synthetic", [f"recipe={value}"])
    assert str(caught.value) == message
    path = tmp_path / "run.yaml"
    path.write_text(f"recipe: {value}\n")
    with pytest.raises(ConfigError, match=f"^{message}$"):
        build_config("tabular", [], path)
    as_text = f"^recipe: expected one of paper, best, got '{value}'$"  # the value as a string, in Python or JSON
    with pytest.raises(ConfigError, match=as_text):
        config_from_dict({**to_dict(default_config("synthetic")), "recipe": value})
    config = default_config("synthetic")
    config.recipe = value
    with pytest.raises(ConfigError, match=as_text):
        config.validate(3)
    with pytest.raises(ConfigError, match=as_text):
        apply_recipe(default_config("synthetic"), value)


def test_method_train_overrides_apply_over_the_recipe():
    config = build_config("synthetic", ["recipe=best"])
    config.methods = [MethodSpec("kl", "kl"), MethodSpec("kl_acc", "kl", train={"select": "accuracy", "patience": 2}),
                      MethodSpec("kl_last", "kl", train={"select": "last", "patience": None})]
    config.validate(3)
    settings = {m.name: config.student_train(m) for m in config.methods}
    assert (settings["kl"].select, settings["kl"].patience) == ("nll", 5)
    assert (settings["kl_acc"].select, settings["kl_acc"].patience) == ("accuracy", 2)
    assert (settings["kl_last"].select, settings["kl_last"].patience) == ("last", None)
    # under paper, a method's own early stopping (select and patience) still applies
    paper = build_config("synthetic")
    paper.methods = [MethodSpec("kl_es", "kl", train={"select": "nll", "patience": 5})]
    paper.validate(3)
    assert (paper.student_train(paper.methods[0]).select, paper.student_train(paper.methods[0]).patience) == ("nll", 5)


def test_recipe_line_states_the_recipe_and_what_ran():
    assert build_config("synthetic").recipe_line() == (
        "Recipe: paper (the paper's protocol). Teacher: every epoch run, the final weights kept;"
        " students: every epoch run, the final weights kept.")
    assert build_config("synthetic", ["recipe=best"]).recipe_line() == (
        "Recipe: best (checkpoints chosen on validation NLL). Teacher: the checkpoint with the lowest validation"
        " NLL, patience 5 epochs; students: the checkpoint with the lowest validation NLL, patience 5 epochs.")
    assert build_config("rotten-tomatoes").recipe_line() == (
        "Recipe: best (checkpoints chosen on validation NLL). Teacher: the checkpoint with the lowest validation"
        " NLL, patience 1 epoch; students: the checkpoint with the lowest validation NLL, patience 1 epoch.")
    assert build_config("sst2").recipe_line() == (  # the T5 teacher is scored pretrained
        "Recipe: paper (the paper's protocol). Teacher: not trained in this run;"
        " students: every epoch run, the final weights kept.")
    config = build_config("tabular", ["student.train.patience=3", "teacher.train.patience=null",
                                      "methods=[{name: kl, loss: kl}, {name: kl_acc, loss: kl,"
                                      " train: {select: accuracy, patience: 2}}]"])
    assert config.recipe_line() == (
        "Recipe: best (checkpoints chosen on validation NLL). Teacher: every epoch run, the checkpoint with the"
        " lowest validation NLL kept; students: the checkpoint with the lowest validation NLL, patience 3 epochs;"
        " set over the recipe: teacher.train.patience=None, student.train.patience=3;"
        " methods with their own select/patience: kl_acc.")


@pytest.mark.slow
def test_the_report_states_the_recipe_and_the_parent_run_is_tagged(tmp_path: Path):
    from ptdistill.steps.common import RunInfo
    from ptdistill.steps.data import SPLITS, prepare_data
    from ptdistill.steps.report import report
    from ptdistill.tracking import Tracker

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = build_config("synthetic", ["recipe=best", "seeds=[0]", "methods=[{name: kl, loss: kl}]",
                                        "data.sizes={teacher_train: 60, distill: 60, validation: 60, test: 60}"],
                          quick=True)
    info = prepare_data(config, "recipe-1", tracking_uri, str(tmp_path / "store"),
                        {name: tmp_path / name for name in SPLITS}, tmp_path / "run_info")
    tracker = Tracker(tracking_uri)
    assert tracker.client.get_run(info.parent_run_id).data.tags["ptdistill.recipe"] == "best"
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.txt").write_text("w")
    metrics = {"val_accuracy": 0.9, "val_task": 0.9, "test_accuracy": 0.9, "test_nll": 0.3, "test_ece": 0.05}
    run_id = tracker.log_student(info.parent_run_id, "kl-seed0", params={"method": "kl", "seed": 0}, metrics=metrics,
                                 curves={}, artifacts={}, model_dir=model)
    out = report(config, RunInfo.load(tmp_path / "run_info"), [{"method": "kl", "seed": 0, "run_id": run_id, **metrics}],
                 {"teacher_tvd": 0.1, "proxy_tvd": 0.2, "strategy": "random", "criterion": "q", "order": 1,
                  "proxy_flips": 0.0, "validation_rows": 60, "teacher_accuracy": 0.95, "warnings": []},
                 {"accuracy": 0.95, "nll": 0.2, "ece": 0.02}, tmp_path / "report.md",
                 tmp_path / "report.html", tmp_path / "out")
    assert config.recipe_line() in out["markdown"].splitlines()
    assert config.recipe_line().startswith("Recipe: best (")
