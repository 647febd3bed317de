"""Unit tests of each KFP component, run in this process through ``component.python_func``.

As in kubeflow/pipelines-components: inputs and outputs are ``dsl`` artifact objects whose
``uri`` is a path under a temporary folder, the way the KFP executor hands them over. The
components are chained by module fixtures (one stage each) on a tiny synthetic config, with
MLflow on a temporary SQLite file and the artifact store in a temporary folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kfp import dsl

from components.distill_student import distill_student
from components.evaluate import evaluate
from components.merge_teacher_shards import merge_teacher_shards
from components.prepare_data import prepare_data
from components.proxy_search import proxy_search
from components.report import report
from components.teacher_inference import teacher_inference
from components.teacher_inference_shard import teacher_inference_shard
from components.train_teacher import train_teacher
from ptdistill.config import ConfigError, to_dict
from ptdistill.experiments import MethodSpec, TabularConfig
from ptdistill.families.mlp.models import MLP
from ptdistill.families.mlp.split import FeatureSplit
from ptdistill.steps.common import RunInfo
from ptdistill.steps.report import RECOMMENDED_TAG, recommend
from ptdistill.storage import open_store
from ptdistill.tracking import CHAMPION_ALIAS, PARENT_TAG, ROLE_TAG, Tracker

# slow: runs every step of a tiny experiment (teacher and student training).
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"),
              pytest.mark.usefixtures("one_torch_thread")]

SPLITS = ("teacher_train", "distill", "validation", "test")
PNG = b"\x89PNG\r\n\x1a\n"
RUN_NAME = "unit-run"


@dataclass
class Env:
    root: Path
    config: object
    tracking_uri: str
    store: str

    @property
    def config_json(self) -> str:
        return json.dumps(to_dict(self.config))

    def artifact(self, cls, *parts: str):
        """An output artifact as the executor makes it: a ``uri`` whose parent folder exists."""
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(name=parts[-1], uri=str(path))

    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri)


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_config) -> Env:
    root = tmp_path_factory.mktemp("components")
    return Env(root=root, config=tiny_config(("ptloss", "kl")), tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
               store=str(root / "store"))


# --------------------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def prepared(env) -> dict:
    outputs = {name: env.artifact(dsl.Dataset, "prepare_data", name) for name in SPLITS}
    outputs["run_info"] = env.artifact(dsl.Artifact, "prepare_data", "run_info")
    result = prepare_data.python_func(config=env.config_json, run_name=RUN_NAME, tracking_uri=env.tracking_uri,
                                      artifact_store=env.store, **outputs)
    assert result is None
    info = RunInfo.load(outputs["run_info"].path)
    # Snapshot now: the report stage closes the parent later.
    outputs["parent_at_start"] = env.tracker().client.get_run(info.parent_run_id)
    return outputs


@pytest.fixture(scope="module")
def info(prepared) -> RunInfo:
    return RunInfo.load(prepared["run_info"].path)


@pytest.fixture(scope="module")
def teacher(env, prepared) -> dict:
    model = env.artifact(dsl.Model, "train_teacher", "teacher")
    out = train_teacher.python_func(config=env.config_json, run_info=prepared["run_info"],
                                    teacher_train=prepared["teacher_train"], validation=prepared["validation"],
                                    teacher=model)
    return {"model": model, "teacher_id": out.teacher_id}


def _infer(env, prepared, teacher, folder: str, config_json: str | None = None, run_info=None) -> dict:
    """teacher_inference on ``teacher`` (default: the module's config and run)."""
    outputs = {name: env.artifact(dsl.Dataset, folder, name) for name in ("distill_probs", "validation_probs",
                                                                          "test_probs")}
    outputs["teacher_report"] = env.artifact(dsl.Artifact, folder, "teacher_report")
    teacher_inference.python_func(config=config_json or env.config_json, run_info=run_info or prepared["run_info"],
                                  teacher=teacher["model"],
                                  distill=prepared["distill"], validation=prepared["validation"],
                                  test=prepared["test"], **outputs)
    outputs["report"] = json.loads(Path(outputs["teacher_report"].path).read_text())
    return outputs


@pytest.fixture(scope="module")
def inference(env, prepared, teacher) -> dict:
    """Two calls: the first fills the teacher cache, the second is served from it."""
    first = _infer(env, prepared, teacher, "teacher_inference_1")
    parent = env.tracker().client.get_run(RunInfo.load(prepared["run_info"].path).parent_run_id)
    first["cache_tag"] = parent.data.tags["teacher_cache"]
    second = _infer(env, prepared, teacher, "teacher_inference_2")
    return {"first": first, "second": second}


@pytest.fixture(scope="module")
def sharded_inference(env, prepared, teacher) -> dict:
    """Two shards and their merge, against a store of their own (so the shards run the teacher)."""
    info = dataclasses.replace(RunInfo.load(prepared["run_info"].path), artifact_store=f"{env.store}-sharded")
    run_info = env.artifact(dsl.Artifact, "sharded", "run_info")
    info.save(run_info.path)
    splits = {name: prepared[name] for name in ("distill", "validation", "test")}
    parts = [env.artifact(dsl.Dataset, f"teacher_inference_shard_{i}", "part") for i in range(2)]
    for i, part in enumerate(parts):
        teacher_inference_shard.python_func(config=env.config_json, run_info=run_info, teacher=teacher["model"],
                                            shard=i, num_shards=2, part=part, **splits)
    outputs = {name: env.artifact(dsl.Dataset, "merge_teacher_shards", name) for name in ("distill_probs",
                                                                                          "validation_probs",
                                                                                          "test_probs")}
    outputs["teacher_report"] = env.artifact(dsl.Artifact, "merge_teacher_shards", "teacher_report")
    merge_teacher_shards.python_func(config=env.config_json, run_info=run_info, parts=parts, **splits, **outputs)
    return {"parts": parts, **outputs, "report": json.loads(Path(outputs["teacher_report"].path).read_text())}


@pytest.fixture(scope="module")
def searched(env, prepared, inference) -> dict:
    outputs = {"search": env.artifact(dsl.Artifact, "proxy_search", "search"),
               "summary": env.artifact(dsl.Markdown, "proxy_search", "summary")}
    proxy_search.python_func(config=env.config_json, run_info=prepared["run_info"],
                             validation=prepared["validation"],
                             validation_probs=inference["first"]["validation_probs"], **outputs)
    return outputs


@pytest.fixture(scope="module")
def students(env, prepared, inference, searched) -> dict:
    out = {}
    for method in ("ptloss", "kl"):
        model = env.artifact(dsl.Model, f"distill_student_{method}", "student")
        # kfp.local hands loop items over as JSON numbers: the seed arrives as a float.
        distill_student.python_func(config=env.config_json, student_item={"method": method, "seed": 0.0},
                                    run_info=prepared["run_info"], distill=prepared["distill"],
                                    distill_probs=inference["first"]["distill_probs"],
                                    validation=prepared["validation"], search=searched["search"],
                                    teacher_train=prepared["teacher_train"], student=model)
        out[method] = model
    return out


@pytest.fixture(scope="module")
def evaluated(env, prepared, students) -> dict:
    out = {}
    for method, model in students.items():
        metrics = env.artifact(dsl.Metrics, f"evaluate_{method}", "metrics")
        confusion = env.artifact(dsl.ClassificationMetrics, f"evaluate_{method}", "confusion")
        row = evaluate.python_func(config=env.config_json, run_info=prepared["run_info"], student=model,
                                   validation=prepared["validation"], test=prepared["test"], metrics=metrics,
                                   confusion=confusion)
        out[method] = {"json": row, "row": json.loads(row), "metrics": metrics, "confusion": confusion}
    return out


@pytest.fixture(scope="module")
def reported(env, prepared, inference, searched, evaluated) -> dict:
    outputs = {"markdown": env.artifact(dsl.Markdown, "report", "markdown"),
               "page": env.artifact(dsl.HTML, "report", "page")}
    report.python_func(config=env.config_json, summaries=[e["json"] for e in evaluated.values()],
                       run_info=prepared["run_info"], search=searched["search"],
                       teacher_report=inference["first"]["teacher_report"], **outputs)
    return outputs


# --------------------------------------------------------------------------- prepare_data


def test_prepare_data_writes_four_splits(env, prepared, info):
    sizes = env.config.data.sizes
    for name in SPLITS:
        split = FeatureSplit.load(prepared[name].path)
        assert len(split) == sizes[name]
        assert split.dim == env.config.data.dim
        assert (split.labels is None) == (name == "distill"), name  # the distillation split is unlabeled
        assert split.p_star is not None  # synthetic data: the true posterior is known
        assert prepared[name].metadata["fingerprint"] == info.fingerprint


def test_prepare_data_writes_run_info(env, prepared, info):
    raw = json.loads(Path(prepared["run_info"].path).read_text())
    assert set(raw) == {f.name for f in dataclasses.fields(RunInfo)}
    assert info.benchmark == "synthetic" and info.run_name == RUN_NAME
    assert info.tracking_uri == env.tracking_uri and info.artifact_store == env.store
    assert info.num_classes == 3
    assert info.class_names == ["0", "1", "2"]
    assert len(info.fingerprint) == 64


def test_prepare_data_opens_a_running_parent(prepared, info):
    parent = prepared["parent_at_start"]
    assert parent.info.run_id == info.parent_run_id
    assert parent.info.status == "RUNNING"
    assert parent.info.run_name == RUN_NAME
    tags = parent.data.tags
    assert tags[ROLE_TAG] == "parent" and tags["kfp.run_name"] == RUN_NAME and tags["benchmark"] == "synthetic"
    assert tags["data_fingerprint"] == info.fingerprint
    assert tags["git_commit"]
    assert json.loads(parent.data.params["seeds"]) == [0]
    assert json.loads(parent.data.params["methods"]) == ["ptloss", "kl"]


def test_prepare_data_rejects_bad_data_before_writing(env, tmp_path):
    csv = tmp_path / "one_class.csv"
    pd.DataFrame({"x1": np.arange(20.0), "x2": np.ones(20), "label": ["a"] * 20}).to_csv(csv, index=False)
    config = TabularConfig.quick()
    config.data.path = str(csv)
    outputs = {name: dsl.Dataset(name=name, uri=str(tmp_path / "out" / name)) for name in SPLITS}
    run_info = dsl.Artifact(name="run_info", uri=str(tmp_path / "out" / "run_info"))
    with pytest.raises(ValueError, match="single class"):
        prepare_data.python_func(config=json.dumps(to_dict(config)), run_name="bad", tracking_uri=env.tracking_uri,
                                 artifact_store=env.store, run_info=run_info, **outputs)
    assert not (tmp_path / "out").exists()
    assert env.tracker().experiment_id("tabular", create=False) is None  # no parent run was opened


# --------------------------------------------------------------------------- train_teacher


def test_train_teacher_saves_a_model_dir(env, teacher, info):
    path = Path(teacher["model"].path)
    assert path.is_dir() and (path / "config.json").is_file()
    model = MLP.from_pretrained(path)
    assert model.config.input_dim == env.config.data.dim and model.config.num_classes == info.num_classes
    assert list(model.config.hidden) == env.config.teacher.hidden
    assert teacher["teacher_id"].startswith("mlp:")
    assert teacher["model"].metadata["teacher_id"] == teacher["teacher_id"]
    assert teacher["model"].metadata["epochs_run"] == env.config.teacher.train.epochs
    parent = env.tracker().client.get_run(info.parent_run_id)
    assert parent.data.tags["teacher_id"] == teacher["teacher_id"]
    keys = open_store(env.store).list(f"synthetic/{RUN_NAME}/teacher/")
    assert f"synthetic/{RUN_NAME}/teacher/config.json" in keys


def _train_again(env, prepared, folder: str, config) -> tuple[dsl.Model, object]:
    model = env.artifact(dsl.Model, folder, "teacher")
    out = train_teacher.python_func(config=json.dumps(to_dict(config)), run_info=prepared["run_info"],
                                    teacher_train=prepared["teacher_train"], validation=prepared["validation"],
                                    teacher=model)
    return model, out


def test_train_teacher_reuses_a_teacher_trained_from_the_same_recipe_and_data(env, prepared, teacher, info,
                                                                              monkeypatch):
    from ptdistill.families.mlp.backend import MLPBackend

    assert teacher["model"].metadata["cache"] == "miss"
    entries = open_store(env.store).list("cache/trained-teacher/")
    assert len([k for k in entries if k.endswith("/entry.json")]) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was trained again")

    with monkeypatch.context() as patch:
        patch.setattr(MLPBackend, "train_teacher", refuse)
        model, out = _train_again(env, prepared, "train_teacher_hit", env.config)
    assert model.metadata["cache"] == "hit" and out.teacher_id == teacher["teacher_id"]
    for name in ("config.json", "model.pt"):
        assert (Path(model.path) / name).read_bytes() == (Path(teacher["model"].path) / name).read_bytes()
    assert env.tracker().client.get_run(info.parent_run_id).data.tags["teacher_train_cache"] == "hit"

    other = dataclasses.replace(env.config, teacher=dataclasses.replace(
        env.config.teacher, train=dataclasses.replace(env.config.teacher.train, epochs=1)))
    model, out = _train_again(env, prepared, "train_teacher_other", other)
    assert model.metadata["cache"] == "miss" and model.metadata["epochs_run"] == 1
    assert out.teacher_id != teacher["teacher_id"]
    model, _ = _train_again(env, prepared, "train_teacher_off", dataclasses.replace(env.config, cache_teacher=False))
    assert model.metadata["cache"] == "off" and model.metadata["epochs_run"] == env.config.teacher.train.epochs


def test_of_two_runs_caching_the_same_teacher_at_once_the_first_entry_wins(env, prepared, teacher, info,
                                                                          monkeypatch):
    """The second run looked before the first finished (exists -> False), trained, then lost the race."""
    from ptdistill.steps.teacher import trained_teacher_key
    from ptdistill.storage import LocalStore

    store = open_store(env.store)
    key = trained_teacher_key(env.config, info.num_classes, Path(prepared["teacher_train"].path),
                              Path(prepared["validation"].path))
    entry_key = f"{key}/entry.json"
    before = store.read_bytes(entry_key)
    with monkeypatch.context() as patch:
        patch.setattr(LocalStore, "exists", lambda self, key: False)
        model, _ = _train_again(env, prepared, "train_teacher_race", env.config)
    assert model.metadata["cache"] == "miss" and store.read_bytes(entry_key) == before
    folders = {k.split("/")[3] for k in store.list(entry_key.rsplit("/", 1)[0] + "/") if k.count("/") > 3}
    assert folders == {json.loads(before)["folder"]}  # the loser's copy was removed


# --------------------------------------------------------------------------- teacher_inference


@pytest.mark.parametrize("split", ["distill", "validation", "test"])
def test_teacher_inference_writes_probabilities(env, prepared, teacher, inference, split):
    frame = pd.read_parquet(inference["first"][f"{split}_probs"].path)
    probs = np.stack(frame["probs"].to_numpy())
    assert probs.shape == (env.config.data.sizes[split], 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (probs >= 0).all()
    assert (frame["teacher_id"] == teacher["teacher_id"]).all()
    np.testing.assert_array_equal(frame["id"].to_numpy(), FeatureSplit.load(prepared[split].path).ids)


def test_teacher_inference_second_call_is_a_cache_hit(env, teacher, inference):
    first, second = inference["first"], inference["second"]
    for split in ("distill", "validation", "test"):
        assert first[f"{split}_probs"].metadata["cache"] == "miss"
        assert second[f"{split}_probs"].metadata["cache"] == "hit"
        assert first["report"]["splits"][split]["cache"] == "miss"
        assert second["report"]["splits"][split]["cache"] == "hit"
        assert first["report"]["splits"][split]["uri"] == second["report"]["splits"][split]["uri"]
        assert Path(second[f"{split}_probs"].path).read_bytes() == Path(first[f"{split}_probs"].path).read_bytes()
    assert first["report"]["teacher_id"] == second["report"]["teacher_id"] == teacher["teacher_id"]
    assert first["report"]["splits"]["test"]["metrics"] == second["report"]["splits"]["test"]["metrics"]
    assert "metrics" not in first["report"]["splits"]["distill"]  # unlabeled
    assert first["cache_tag"] == "distill:miss,validation:miss,test:miss"
    assert len(open_store(env.store).list("cache/teacher/")) == 3


def test_teacher_inference_tags_the_cache_outcome(env, info, inference):
    parent = env.tracker().client.get_run(info.parent_run_id)
    assert parent.data.tags["teacher_cache"] == "distill:hit,validation:hit,test:hit"
    assert "teacher_test_accuracy" in parent.data.metrics


def test_sharded_inference_components_match_teacher_inference(inference, sharded_inference):
    for i, part in enumerate(sharded_inference["parts"]):
        assert part.metadata["shard"] == i and part.metadata["num_shards"] == 2
        assert part.metadata["distill_cache"] == "miss" and part.metadata["examples_per_second"] > 0
    for split in ("distill", "validation", "test"):
        merged = sharded_inference[f"{split}_probs"]
        assert merged.metadata["cache"] == "miss"
        assert Path(merged.path).read_bytes() == Path(inference["first"][f"{split}_probs"].path).read_bytes()
    report = sharded_inference["report"]
    assert [s["shard"] for s in report["shards"]] == [0, 1] and report["examples_per_second"] > 0
    assert report["splits"]["test"]["metrics"] == inference["first"]["report"]["splits"]["test"]["metrics"]


# --------------------------------------------------------------------------- teacher checkpoint selection

#: A teacher chosen on validation NLL, stopping after one epoch without a gain (at a rate at which
#: the tiny teacher's validation NLL turns well within 40 epochs).
SELECT_NLL = {"epochs": 40, "lr": 0.05, "select": "nll", "patience": 1}


@pytest.fixture(scope="module")
def selecting(env, prepared, info) -> dict:
    """A SELECT_NLL teacher trained for one parent run, then served from the trained-teacher cache
    for a second (each run with a parent of its own; both on a store of their own), and
    teacher_inference on the second."""
    train = dataclasses.replace(env.config.teacher.train, **SELECT_NLL)
    config_json = json.dumps(to_dict(dataclasses.replace(env.config, teacher=dataclasses.replace(
        env.config.teacher, train=train))))
    runs = {}
    for name in ("select-nll-1", "select-nll-2"):
        parent = env.tracker().start_parent("synthetic", name, tags={}, params={})
        run_info = env.artifact(dsl.Artifact, name, "run_info")
        dataclasses.replace(info, run_name=name, parent_run_id=parent, artifact_store=f"{env.store}-select").save(
            run_info.path)
        model = env.artifact(dsl.Model, name, "teacher")
        train_teacher.python_func(config=config_json, run_info=run_info, teacher_train=prepared["teacher_train"],
                                  validation=prepared["validation"], teacher=model)
        runs[name] = {"parent": parent, "run_info": run_info, "model": model}
    second = runs["select-nll-2"]
    second["report"] = _infer(env, prepared, second, "select-nll-2-inference", config_json, second["run_info"])["report"]
    return runs


def test_the_teachers_selection_travels_with_it_to_the_teacher_report(teacher, inference, sharded_inference):
    """train_teacher writes the selection beside the weights; inference, sharded or not, reports it."""
    training = json.loads((Path(teacher["model"].path) / "training.json").read_text())
    assert teacher["model"].metadata["training"] == training
    assert (training["select"], training["epoch"], training["epochs_run"], training["stopped_early"]) == (
        "last", 2, 2, False)
    assert training["curve"]["epoch"] == [1, 2] and training["val_nll"] == training["curve"]["nll"][1]
    for teacher_report in (inference["first"]["report"], inference["second"]["report"], sharded_inference["report"]):
        assert teacher_report["training"] == training


def test_a_teacher_selected_by_nll_is_recorded_on_the_parent_run(env, selecting, tmp_path):
    first = selecting["select-nll-1"]
    training, curve = first["model"].metadata["training"], first["model"].metadata["training"]["curve"]
    assert first["model"].metadata["cache"] == "miss" and training["select"] == "nll"
    assert curve["epoch"] == list(range(1, training["epochs_run"] + 1))
    assert training["val_nll"] == min(curve["nll"]) == curve["nll"][training["epoch"] - 1]
    # patience 1: it stopped the epoch after the first without a gain, keeping the epoch before
    assert training["stopped_early"] and training["epochs_run"] == training["epoch"] + 1 < SELECT_NLL["epochs"]
    client = env.tracker().client
    parent = client.get_run(first["parent"])
    assert parent.data.tags["teacher_select"] == "nll" and parent.data.tags["teacher_train_cache"] == "miss"
    assert parent.data.metrics == {"teacher_epochs_run": training["epochs_run"], "teacher_selected_epoch": training["epoch"],
                                   **{f"teacher_val_{k}": training[f"val_{k}"] for k in ("accuracy", "nll", "ece")},
                                   **{f"teacher_epoch_val_{k}": curve[k][-1] for k in ("accuracy", "nll", "ece")}}
    for key in ("accuracy", "nll", "ece"):
        points = client.get_metric_history(first["parent"], f"teacher_epoch_val_{key}")
        assert sorted((m.step, m.value) for m in points) == list(zip(curve["epoch"], curve[key]))
    png = client.download_artifacts(first["parent"], "teacher_validation_curve.png", str(tmp_path))
    assert Path(png).read_bytes().startswith(PNG)


def test_a_cache_hit_keeps_the_teachers_selection(env, selecting):
    first, second = selecting["select-nll-1"], selecting["select-nll-2"]
    training = first["model"].metadata["training"]
    assert second["model"].metadata["cache"] == "hit" and second["model"].metadata["training"] == training
    assert json.loads((Path(second["model"].path) / "training.json").read_text()) == training
    assert second["report"]["training"] == training
    client = env.tracker().client
    logged, again = client.get_run(first["parent"]).data, client.get_run(second["parent"]).data
    assert logged.metrics.items() <= again.metrics.items() and again.tags["teacher_select"] == "nll"
    assert again.tags["teacher_train_cache"] == "hit"
    # the weights kept are the selected epoch's: inference on them scores validation as training did
    validation = second["report"]["splits"]["validation"]["metrics"]
    assert (validation["accuracy"], validation["nll"]) == pytest.approx((training["val_accuracy"], training["val_nll"]),
                                                                       rel=1e-5)


# --------------------------------------------------------------------------- proxy_search


def test_proxy_search_writes_result_table_and_plot(env, searched):
    folder = Path(searched["search"].path)
    result = json.loads((folder / "result.json").read_text())
    eps = np.asarray(result["eps"])
    assert 1 <= result["order"] <= env.config.search.max_order
    assert eps.shape == (3, result["order"])
    assert result["criterion"] == env.config.search.criterion and result["strategy"] == env.config.search.strategy
    candidates = pd.read_csv(folder / "candidates.csv")
    assert len(candidates) == env.config.search.trials * env.config.search.max_order
    assert (folder / "proxy.png").read_bytes().startswith(PNG)
    assert searched["search"].metadata["order"] == result["order"]
    assert "eps" not in searched["search"].metadata
    assert "Proxy search" in Path(searched["summary"].path).read_text()
    chosen = candidates[candidates["eps"].map(lambda e: json.loads(e) == result["eps"])]
    assert "flips" in candidates.columns and result["proxy_flips"] == chosen["flips"].iloc[0] <= 0.5
    assert result["validation_rows"] == env.config.data.sizes["validation"]
    assert 0.0 <= result["teacher_accuracy"] <= 1.0 and isinstance(result["warnings"], list)


def test_proxy_search_logs_to_the_parent_and_publishes(env, info, searched):
    client = env.tracker().client
    assert {a.path for a in client.list_artifacts(info.parent_run_id)} >= {"result.json", "candidates.csv",
                                                                           "proxy.png"}
    assert {"search_order", "search_proxy_flips", "search_teacher_accuracy"} <= client.get_run(
        info.parent_run_id).data.metrics.keys()
    keys = open_store(env.store).list(f"synthetic/{RUN_NAME}/search/")
    assert {k.rsplit("/", 1)[1] for k in keys} == {"result.json", "candidates.csv", "proxy.png"}


# --------------------------------------------------------------------------- distill_student


def test_distill_student_saves_model_and_training_record(env, info, searched, students):
    eps = json.loads((Path(searched["search"].path) / "result.json").read_text())["eps"]
    for method, model in students.items():
        folder = Path(model.path)
        student = MLP.from_pretrained(folder)
        assert list(student.config.hidden) == env.config.student.hidden
        record = json.loads((folder / "training.json").read_text())
        assert record["method"] == method and record["seed"] == 0 and isinstance(record["seed"], int)
        assert model.metadata == {"method": method, "seed": 0}
        assert record["history"]["epochs_run"] == env.config.student.train.epochs
        assert len(record["history"]["train_loss"]) >= 3
        if method == "ptloss":
            assert record["loss"] == "ptloss"
            assert record["params"]["eps"] == eps  # the coefficients chosen by the search
        else:
            assert record["loss"] == "kl" and "eps" not in record["params"]
        keys = open_store(env.store).list(f"synthetic/{RUN_NAME}/students/{method}-seed0/")
        assert f"synthetic/{RUN_NAME}/students/{method}-seed0/training.json" in keys


def test_distill_student_rejects_an_unknown_method(env, prepared, inference, searched):
    model = env.artifact(dsl.Model, "distill_student_unknown", "student")
    with pytest.raises(ConfigError, match="no method named 'nope'"):
        distill_student.python_func(config=env.config_json, student_item={"method": "nope", "seed": 0.0},
                                    run_info=prepared["run_info"], distill=prepared["distill"],
                                    distill_probs=inference["first"]["distill_probs"],
                                    validation=prepared["validation"], search=searched["search"],
                                    teacher_train=prepared["teacher_train"], student=model)
    assert not Path(model.path).exists()


VARIANTS = [
    MethodSpec("onehot", "kl", targets="labels"),
    MethodSpec("oracle", "kl", targets="p_star"),
    MethodSpec("kl_early", "kl", train={"patience": 1, "select": "accuracy"}),
    MethodSpec("pt_order2", "ptloss", {"order": 2}),
    MethodSpec("pt_rank1", "ptloss", {"rank": 1}),
    MethodSpec("pt_random", "ptloss", {"random_seed": 3, "order": 2}),
]


@pytest.fixture(scope="module")
def variant_records(env, prepared, inference, searched) -> dict:
    config = dataclasses.replace(env.config, methods=[*env.config.methods, *VARIANTS])
    config.validate(3)
    records = {}
    for method in VARIANTS:
        model = env.artifact(dsl.Model, f"distill_student_{method.name}", "student")
        distill_student.python_func(config=json.dumps(to_dict(config)),
                                    student_item={"method": method.name, "seed": 0.0}, run_info=prepared["run_info"],
                                    distill=prepared["distill"],
                                    distill_probs=inference["first"]["distill_probs"],
                                    validation=prepared["validation"], search=searched["search"],
                                    teacher_train=prepared["teacher_train"], student=model)
        records[method.name] = json.loads((Path(model.path) / "training.json").read_text())
    return records


def test_onehot_and_oracle_students_train_on_labels_and_p_star(env, prepared, variant_records):
    train = env.config.student.train
    sizes = {name: len(FeatureSplit.load(prepared[name].path)) for name in ("teacher_train", "distill")}
    onehot, oracle = variant_records["onehot"], variant_records["oracle"]
    assert (onehot["targets"], oracle["targets"]) == ("labels", "p_star")
    assert onehot["history"]["steps"] == train.epochs * -(-sizes["teacher_train"] // train.batch_size)
    assert oracle["history"]["steps"] == train.epochs * -(-sizes["distill"] // train.batch_size)
    assert "proxy_l2_to_pstar" not in oracle


def test_train_overrides_reach_the_student(variant_records):
    assert variant_records["kl_early"]["train"] == {"patience": 1, "select": "accuracy"}


def test_ptloss_coefficient_choices(env, searched, variant_records):
    folder = Path(searched["search"].path)
    criterion = json.loads((folder / "result.json").read_text())["criterion"]
    table = pd.read_csv(folder / "candidates.csv")
    best_order2 = table[table["order"] == 2].sort_values(criterion, kind="stable").iloc[0]
    second = table.sort_values(criterion, kind="stable").iloc[1]
    assert variant_records["pt_order2"]["params"]["eps"] == json.loads(best_order2["eps"])
    assert variant_records["pt_rank1"]["params"]["eps"] == json.loads(second["eps"])
    search = env.config.search
    expected = np.random.default_rng(3).uniform(search.low, search.high, size=(3, 2))
    np.testing.assert_array_equal(variant_records["pt_random"]["params"]["eps"], expected)
    for name in ("pt_order2", "pt_rank1", "pt_random"):
        assert variant_records[name]["proxy_l2_to_pstar"] > 0  # synthetic data: p* is known
    assert variant_records["pt_random"]["eps_choice"] == {"order": 2, "random_seed": 3}


# --------------------------------------------------------------------------- evaluate


def test_evaluate_returns_a_summary_row(evaluated):
    for method, out in evaluated.items():
        row = out["row"]
        assert row["method"] == method and row["seed"] == 0
        assert "confusion_matrix" not in row  # it goes to the ClassificationMetrics output
        for split in ("test", "val"):
            for metric in ("accuracy", "nll", "ece", "task"):
                assert isinstance(row[f"{split}_{metric}"], float), (method, split, metric)
        assert row["test_task"] == row["test_accuracy"]
        assert out["metrics"].metadata["test_accuracy"] == row["test_accuracy"]
        assert out["metrics"].metadata["val_nll"] == row["val_nll"]
        matrix = out["confusion"].metadata["confusionMatrix"]
        assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["0", "1", "2"]


def test_evaluate_logs_a_finished_child_run(env, info, evaluated):
    client = env.tracker().client
    for method, out in evaluated.items():
        child = client.get_run(out["row"]["run_id"])
        assert child.info.status == "FINISHED"
        assert child.info.run_name == f"{method}-seed0"
        assert child.data.tags[PARENT_TAG] == info.parent_run_id
        params = child.data.params
        assert params["method"] == method and params["seed"] == "0"
        if method == "ptloss":
            eps = json.loads(params["eps"])
            assert int(params["order"]) == len(eps[0]) and len(eps) == 3
        else:
            assert "eps" not in params and "order" not in params
        assert child.data.metrics["test_accuracy"] == pytest.approx(out["row"]["test_accuracy"])
        assert len(client.get_metric_history(child.info.run_id, "train_loss")) >= 3
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"model", "confusion_matrix.png",
                                                                              "training.json"}


def test_evaluate_records_the_students_selection_on_its_child_run(env, students, evaluated):
    client = env.tracker().client
    for method, out in evaluated.items():
        history = json.loads((Path(students[method].path) / "training.json").read_text())["history"]
        row, run_id = out["row"], out["row"]["run_id"]
        child = client.get_run(run_id).data
        assert child.params["select"] == row["params"]["select"] == history["select"] == "last"
        assert row["epochs_run"] == child.metrics["epochs_run"] == history["epochs_run"] == 2
        assert row["selected_epoch"] == child.metrics["selected_epoch"] == history["best_epoch"] == 2
        for key in ("accuracy", "nll", "ece"):
            points = client.get_metric_history(run_id, f"epoch_val_{key}")
            assert sorted((m.step, m.value) for m in points) == list(zip(history["val_epoch"], history[f"val_{key}"]))
        # val_* are the kept (selected) epoch's scores, measured again on the saved student
        assert child.metrics["val_nll"] == pytest.approx(history["best_val_nll"], rel=1e-5)


# --------------------------------------------------------------------------- report


def test_report_writes_markdown_and_html(reported, info, evaluated):
    markdown = Path(reported["markdown"].path).read_text()
    assert markdown.startswith(f"# ptdistill synthetic: {RUN_NAME}")
    assert "| ptloss | 1 |" in markdown and "| kl | 1 |" in markdown
    assert f"`{info.fingerprint[:12]}`" in markdown
    page = Path(reported["page"].path).read_text()
    assert page.startswith("<html>") and "<table" in page and "data:image/png;base64," in page
    folder = Path(reported["markdown"].path).parent / "report"
    assert (folder / "report.md").read_text() == markdown
    assert json.loads((folder / "students.json").read_text()) == [e["row"] for e in evaluated.values()]


def test_report_registers_the_recommended_champion_and_closes_the_parent(env, info, evaluated, reported):
    client = env.tracker().client
    version = client.get_model_version_by_alias("ptdistill-synthetic", CHAMPION_ALIAS)
    rows = [e["row"] for e in evaluated.values()]
    recommended = recommend(env.config, rows).method
    best = max((row for row in rows if row["method"] == recommended), key=lambda row: row["val_task"])
    assert version.run_id == best["run_id"]
    parent = client.get_run(info.parent_run_id)
    assert parent.data.tags[RECOMMENDED_TAG] == recommended
    assert parent.info.status == "FINISHED"
    for method in ("ptloss", "kl"):
        assert f"test_accuracy_mean_{method}" in parent.data.metrics
    assert {a.path for a in client.list_artifacts(info.parent_run_id)} >= {"report.md", "report.html",
                                                                           "accuracy.png", "students.json"}
    keys = open_store(env.store).list(f"synthetic/{RUN_NAME}/report/")
    assert f"synthetic/{RUN_NAME}/report/report.md" in keys


def test_report_states_the_teachers_checkpoint(teacher, reported):
    training = json.loads((Path(teacher["model"].path) / "training.json").read_text())
    assert (f"Teacher checkpoint: final weights after 2 epochs (select last), validation NLL {training['val_nll']:.4f},"
            f" accuracy {training['val_accuracy']:.4f}, ECE {training['val_ece']:.4f}.\n"
            ) in Path(reported["markdown"].path).read_text()
