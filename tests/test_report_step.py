"""The run's report step: spread over seeds, students flagged far below KL or the teacher, the method recommended on
validation and its champion candidate, MLflow metrics and tags."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ptdistill.experiments import MethodSpec, SyntheticConfig, default_methods
from ptdistill.steps.common import RunInfo
from ptdistill.steps.report import (FLAG_TAG, RECOMMENDED_TAG, flag_students, format_table, recommend,
                                    recommendation_lines, recommendation_metrics, report, results_table)
from ptdistill.tracking import Tracker, experiment_name

# slow: MLflow SQLite stores.
pytestmark = pytest.mark.slow

SEARCH = {"teacher_tvd": 0.1, "proxy_tvd": 0.2, "strategy": "random", "criterion": "q", "order": 1,
          "proxy_flips": 0.6667, "validation_rows": 18, "teacher_accuracy": 17 / 18,
          "warnings": ["validation split too small to rank coefficient candidates: 18 rows (class 0: 6, class 1: 7,"
                       " class 2: 5); want at least 30 per class, else a few rows decide which coefficients win"]}
TEACHER = {"accuracy": 0.97, "nll": 0.1, "ece": 0.02}


@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> Tracker:
    """One MLflow store for the module (creating its schema is the slow part); each test its own parent run."""
    return Tracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")


def _run(tracker: Tracker, tmp_path: Path, accuracies: dict[tuple[str, int], tuple[float, float]], seeds: list[int]):
    """report() over students with (validation, test) accuracies; returns its result, the parent and student ids."""
    parent = tracker.start_parent("synthetic", "run-1", tags={}, params={})
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "weights.txt").write_text("w")
    rows, ids = [], {}
    for (method, seed), (val, test) in accuracies.items():
        metrics = {"val_accuracy": val, "val_task": val, "test_accuracy": test, "test_nll": 0.5, "test_ece": 0.05}
        ids[method, seed] = tracker.log_student(parent, f"{method}-seed{seed}", params={"method": method, "seed": seed},
                                                metrics=metrics, curves={}, artifacts={}, model_dir=model)
        rows.append({"method": method, "seed": seed, "run_id": ids[method, seed], **metrics})
    info = RunInfo(benchmark="synthetic", run_name="run-1", parent_run_id=parent, tracking_uri=tracker.tracking_uri,
                   artifact_store=str(tmp_path / "store"), fingerprint="ab" * 32, num_classes=3,
                   class_names=["a", "b", "c"])
    config = SyntheticConfig(methods=default_methods()[:2], seeds=seeds)
    out = report(config, info, rows, SEARCH, TEACHER, tmp_path / "report.md", tmp_path / "report.html",
                 tmp_path / "out")
    return out, parent, ids


def test_one_seed_shows_no_spread_and_logs_no_std(tracker, tmp_path):
    out, parent, _ = _run(tracker, tmp_path, {("ptloss", 0): (0.9, 0.91), ("kl", 0): (0.92, 0.93)}, [0])
    lines = out["markdown"].splitlines()
    assert "| kl | 1 | 0.9300 ± — | 0.5000 ± — | 0.0500 ± — | ★ |" in lines  # kl: 0.92 on validation
    assert "± 0.0000" not in out["markdown"]
    metrics = tracker.client.get_run(parent).data.metrics
    assert metrics["test_accuracy_mean_kl"] == pytest.approx(0.93)
    assert not [k for k in metrics if "_std" in k]


def test_two_seeds_show_and_log_their_spread(tracker, tmp_path):
    accuracies = {("ptloss", 0): (0.9, 0.90), ("ptloss", 1): (0.9, 0.92), ("kl", 0): (0.9, 0.93),
                  ("kl", 1): (0.9, 0.93)}
    out, parent, _ = _run(tracker, tmp_path, accuracies, [0, 1])
    assert "| ptloss | 2 | 0.9100 ± 0.0141 |" in out["markdown"]
    assert "| kl | 2 | 0.9300 ± 0.0000 |" in out["markdown"]  # two equal seeds: a real spread of 0
    metrics = tracker.client.get_run(parent).data.metrics
    assert metrics["test_accuracy_std_ptloss"] == pytest.approx(0.0141421, abs=1e-6)
    assert metrics["test_accuracy_std_kl"] == 0.0


def test_a_collapsed_student_is_flagged_in_the_table_and_in_mlflow(tracker, tmp_path):
    """The issue's run: ptloss on 18 validation rows at 0.17 (every row in one class), kl at 0.97."""
    out, _, ids = _run(tracker, tmp_path, {("ptloss", 0): (3 / 18, 0.17), ("kl", 0): (17 / 18, 0.97)}, [0])
    markdown = out["markdown"]
    why = ("far below kl-seed0: validation accuracy 0.1667 against 0.9444, a gap over the margin 0.1080"
           " (18 validation rows)")
    assert "| method | seeds | accuracy | nll | ece | recommended | flag |" in markdown
    assert "| ptloss | 1 | 0.1700 ± — | 0.5000 ± — | 0.0500 ± — |  | ⚠ far below, seed 0 |" in markdown
    assert "| kl | 1 | 0.9700 ± — | 0.5000 ± — | 0.0500 ± — | ★ |  |" in markdown
    assert f"- ptloss-seed0: {why}" in markdown
    assert ("⚠ Flagged students (validation accuracy below the same-seed plain KL student's (the teacher's, for that"
            " KL student and where the run has no plain KL method) by more than max(0.05, 2 binomial standard errors"
            " of that accuracy on the validation rows)):") in markdown
    assert "⚠ Proxy search: validation split too small to rank coefficient candidates: 18 rows (class 0: 6" in markdown
    assert "the proxy teacher overturns 0.6667 of the teacher's 18 validation decisions" in markdown
    assert tracker.client.get_run(ids["ptloss", 0]).data.tags[FLAG_TAG] == why
    assert FLAG_TAG not in tracker.client.get_run(ids["kl", 0]).data.tags
    assert (tmp_path / "report.md").read_text() == markdown


def _rows(accuracies: dict[tuple[str, int], float]) -> list[dict]:
    return [{"method": m, "seed": s, "run_id": f"{m}{s}", "val_accuracy": a} for (m, s), a in accuracies.items()]


def test_flag_rule_margin_references_and_lr_grid():
    config = SyntheticConfig(methods=default_methods()[:2], seeds=[0, 1])
    search = {"validation_rows": 300, "teacher_accuracy": 0.9}
    # 300 rows at 0.9: 2 SE = 0.0346 < 0.05, so the margin is 0.05
    rows = _rows({("ptloss", 0): 0.849, ("kl", 0): 0.9, ("ptloss", 1): 0.851, ("kl", 1): 0.9})
    assert list(flag_students(config, rows, search)) == [("ptloss", 0)]
    # kl itself is measured against the teacher
    assert list(flag_students(config, _rows({("kl", 0): 0.84, ("ptloss", 0): 0.84}), search)) == [("kl", 0)]
    # without a plain KL method every student is measured against the teacher
    no_kl = SyntheticConfig(methods=[MethodSpec("ptloss", "ptloss"), MethodSpec("kl_t2", "kl", {"temperature": 2.0})])
    assert list(flag_students(no_kl, _rows({("ptloss", 0): 0.86, ("kl_t2", 0): 0.84}), search)) == [("kl_t2", 0)]
    # lr_grid: each variant against kl at the same rate
    grid = SyntheticConfig(methods=default_methods()[:2], seeds=[0], lr_grid=[1e-3, 1e-2])
    rows = _rows({("ptloss-lr0.001", 0): 0.80, ("ptloss-lr0.01", 0): 0.80, ("kl-lr0.001", 0): 0.9,
                  ("kl-lr0.01", 0): 0.82})
    flags = flag_students(grid, rows, {"validation_rows": 300, "teacher_accuracy": 0.86})
    assert list(flags) == [("ptloss-lr0.001", 0)]
    assert re.fullmatch(r"far below kl-lr0\.001-seed0: .*", flags["ptloss-lr0.001", 0])


def _summaries(scores: dict[str, tuple[list[float], list[float]]]) -> list[dict]:
    """Summary rows: method -> (validation task metric per seed, test accuracy per seed)."""
    return [{"method": m, "seed": seed, "run_id": f"{m}{seed}", "val_task": v, "test_accuracy": t}
            for m, (val, test) in scores.items() for seed, (v, t) in enumerate(zip(val, test))]


def test_recommendation_is_chosen_on_validation_and_paired_with_kl():
    """ptloss wins on validation (mean 0.92 against kl's 0.9083) while kl wins on test: ptloss is recommended."""
    config = SyntheticConfig(methods=default_methods()[:2], seeds=[0, 1, 2])
    rows = _summaries({"ptloss": ([0.91, 0.93, 0.92], [0.80, 0.82, 0.81]),
                       "kl": ([0.90, 0.91, 0.915], [0.85, 0.84, 0.83])})
    rec = recommend(config, rows)
    assert (rec.method, rec.seeds, rec.baseline) == ("ptloss", 3, "kl")
    assert rec.val_task_mean == pytest.approx(0.92)
    # expected intervals from the differences directly: mean ± t(0.975, df=2) * sd / sqrt(3)
    for metric, diff in (("val_task", [0.01, 0.02, 0.005]), ("test_accuracy", [-0.05, -0.02, -0.02])):
        half = stats.t.ppf(0.975, 2) * np.std(diff, ddof=1) / math.sqrt(3)
        row = rec.paired.loc[metric]
        assert (row["n"], row["wins"]) == (3, 3 if metric == "val_task" else 0)
        assert (row["mean"], row["low"], row["high"]) == pytest.approx((np.mean(diff), np.mean(diff) - half,
                                                                        np.mean(diff) + half))
    # val: mean 0.011667, sd 0.007638, half 4.3027 * 0.007638 / 1.7321 = 0.018973
    assert recommendation_lines(rec, "accuracy")[4:] == [
        "- Paired difference to kl (ptloss − kl, same seed; mean over seeds, 95% Student-t interval):",
        "  - validation accuracy: +0.0117 [-0.0073, +0.0306], 3/3 seeds better",
        "  - test accuracy (for information only): -0.0300 [-0.0730, +0.0130], 0/3 seeds better",
        "- Caution: on validation, ptloss is not distinguishable from kl (the interval includes 0); kl is as sound"
        " a choice, and more seeds would tell them apart."]
    assert recommendation_metrics(rec) == pytest.approx({
        "recommended_val_task_mean": 0.92,
        "recommended_vs_kl_val_task_diff": 0.011667, "recommended_vs_kl_val_task_diff_low": -0.007306,
        "recommended_vs_kl_val_task_diff_high": 0.030640, "recommended_vs_kl_test_accuracy_diff": -0.03,
        "recommended_vs_kl_test_accuracy_diff_low": -0.073027, "recommended_vs_kl_test_accuracy_diff_high": 0.013027},
        abs=1e-6)


def test_recommendation_ties_go_to_plain_kl_then_to_the_first_method_in_the_config():
    methods = default_methods()  # ptloss, kl, temperature, label_smoothing, focal
    config = SyntheticConfig(methods=methods, seeds=[0, 1])
    val = {"ptloss": [0.8, 0.9], "kl": [0.85, 0.85], "temperature": [0.7, 0.7], "label_smoothing": [0.85, 0.85],
           "focal": [0.85, 0.85]}
    rows = _summaries({m: (v, [0.5, 0.5]) for m, v in val.items()})
    # all but temperature at 0.85, ptloss's (0.8 + 0.9) / 2 being 0.8500000000000001 in floating point: still a tie
    assert recommend(config, rows).method == "kl"
    val |= {"ptloss": [0.9, 0.7], "kl": [0.8, 0.8]}
    rows = _summaries({m: (v, [0.5, 0.5]) for m, v in val.items()})
    assert recommend(config, rows).method == "label_smoothing"  # ties focal, listed after it
    reordered = SyntheticConfig(methods=[methods[4], *methods[:4]], seeds=[0, 1])
    assert recommend(reordered, rows).method == "focal"


def test_recommendation_over_one_seed_has_no_interval():
    config = SyntheticConfig(methods=default_methods()[:2], seeds=[0])
    rec = recommend(config, _summaries({"ptloss": ([0.91], [0.80]), "kl": ([0.90], [0.85])}))
    assert recommendation_lines(rec, "matthews")[1:] == [
        "**Recommended: ptloss** (★), chosen on validation only: mean validation matthews 0.9100 over 1 seed.",
        "Rule: the highest mean over seeds of the validation matthews; on a tie, the run's plain KL method, then the"
        " method listed first in the config (with lr_grid: methods × rates, in that order). Test figures are for"
        " information only; they play no part in the choice.",
        "",
        "- Paired difference to kl (ptloss − kl, same seed; mean over seeds, 95% Student-t interval):",
        "  - validation matthews: +0.0100 [—] (one seed: no interval), 1/1 seeds better",
        "  - test accuracy (for information only): -0.0500 [—] (one seed: no interval), 0/1 seeds better",
        "- Caution: on validation, ptloss is not distinguishable from kl (one seed); kl is as sound a choice, and"
        " more seeds would tell them apart."]
    assert recommendation_metrics(rec) == pytest.approx({
        "recommended_val_task_mean": 0.91, "recommended_vs_kl_val_task_diff": 0.01,
        "recommended_vs_kl_test_accuracy_diff": -0.05})


def test_recommendation_that_is_kl_or_without_kl_has_no_paired_difference():
    config = SyntheticConfig(methods=default_methods()[:2], seeds=[0])
    rec = recommend(config, _summaries({"ptloss": ([0.89], [0.90]), "kl": ([0.90], [0.85])}))
    assert (rec.method, rec.baseline, rec.paired) == ("kl", "kl", None)
    assert recommendation_lines(rec, "accuracy")[-1] == "- kl is the run's plain KL method: no paired difference to KL."
    no_kl = SyntheticConfig(methods=[MethodSpec("ptloss", "ptloss"), MethodSpec("kl_t2", "kl", {"temperature": 2.0})],
                            seeds=[0])
    rec = recommend(no_kl, _summaries({"ptloss": ([0.89], [0.90]), "kl_t2": ([0.90], [0.85])}))
    assert (rec.method, rec.baseline, rec.paired) == ("kl_t2", None, None)
    assert recommendation_lines(rec, "accuracy")[-1] == ("- The run has no plain KL method (loss kl, no parameters,"
                                                         " learning from the teacher): no paired difference to KL.")
    assert recommendation_metrics(rec) == {"recommended_val_task_mean": 0.90}


def test_recommendation_over_an_lr_grid_pairs_the_variant_with_kl_at_its_rate():
    config = SyntheticConfig(methods=default_methods()[:2], seeds=[0, 1], lr_grid=[1e-3, 1e-2])
    val = {"ptloss-lr0.001": [0.80, 0.80], "ptloss-lr0.01": [0.90, 0.92], "kl-lr0.001": [0.91, 0.91],
           "kl-lr0.01": [0.85, 0.86]}
    rec = recommend(config, _summaries({m: (v, [0.5, 0.6]) for m, v in val.items()}))
    assert (rec.method, rec.baseline) == ("kl-lr0.001", "kl-lr0.001")  # a tie at 0.91 with ptloss-lr0.01
    val["ptloss-lr0.01"] = [0.91, 0.92]
    rec = recommend(config, _summaries({m: (v, [0.5, 0.6]) for m, v in val.items()}))
    assert (rec.method, rec.baseline) == ("ptloss-lr0.01", "kl-lr0.01")
    assert rec.paired.loc["val_task", "mean"] == pytest.approx(0.06)  # (0.06 + 0.06) / 2 against kl-lr0.01


def test_the_champion_candidate_is_the_recommended_methods_best_student(tracker, tmp_path):
    """ptloss has the single best validation student (0.95) but the lower mean (0.875 against kl's 0.905):
    the candidate is kl's best seed, and the parent run carries the recommendation."""
    accuracies = {("ptloss", 0): (0.95, 0.96), ("ptloss", 1): (0.80, 0.81), ("kl", 0): (0.90, 0.90),
                  ("kl", 1): (0.91, 0.90)}
    out, parent, ids = _run(tracker, tmp_path, accuracies, [0, 1])
    assert (out["recommended"], out["best_run"]) == ("kl", ids["kl", 1])
    version = tracker.client.get_model_version(experiment_name("synthetic"), str(out["champion"]["version"]))
    assert version.run_id == ids["kl", 1]
    run = tracker.client.get_run(parent)
    assert run.data.tags[RECOMMENDED_TAG] == "kl"
    assert run.data.metrics["recommended_val_task_mean"] == pytest.approx(0.905)
    assert not [k for k in run.data.metrics if k.startswith("recommended_vs_kl")]
    markdown = out["markdown"]
    assert "| kl | 2 | 0.9000 ± 0.0000 | 0.5000 ± 0.0000 | 0.0500 ± 0.0000 | ★ |" in markdown
    assert "| ptloss | 2 | 0.8850 ± 0.1061 | 0.5000 ± 0.0000 | 0.0500 ± 0.0000 |  |" in markdown
    assert ("**Recommended: kl** (★), chosen on validation only: mean validation accuracy 0.9050 over 2 seeds."
            in markdown.splitlines())
    page = (tmp_path / "report.html").read_text()
    assert "<th>recommended</th>" in page and "<td>★</td>" in page
    assert "<p>**Recommended: kl** (★), chosen on validation only" in page


def _selection(select: str, epoch: int | None, epochs_run: int, stopped_early: bool = False) -> dict:
    scores = (None, None, None) if epoch is None else (0.879, 0.29114, 0.0123)
    return {"select": select, "epoch": epoch, "epochs_run": epochs_run, "stopped_early": stopped_early,
            **dict(zip(("val_accuracy", "val_nll", "val_ece"), scores))}


@pytest.mark.parametrize(("training", "sentence"), [
    (_selection("nll", 4, 9, stopped_early=True), " Teacher checkpoint: epoch 4 of 9 run (select nll, stopped early),"
                                                  " validation NLL 0.2911, accuracy 0.8790, ECE 0.0123."),
    (_selection("accuracy", 7, 10), " Teacher checkpoint: epoch 7 of 10 run (select accuracy), validation NLL 0.2911,"
                                    " accuracy 0.8790, ECE 0.0123."),
    (_selection("last", 100, 100), " Teacher checkpoint: final weights after 100 epochs (select last), validation"
                                   " NLL 0.2911, accuracy 0.8790, ECE 0.0123."),
    (_selection("last", None, 1), " Teacher checkpoint: final weights after 1 epoch (select last), no validation"
                                  " scores."),
    (_selection("nll", 8, 8), " Teacher checkpoint: epoch 8 of 8 run (select nll), validation NLL 0.2911, accuracy"
                              " 0.8790, ECE 0.0123. The kept epoch is the last one: validation nll was still"
                              " improving, so more epochs (teacher.train.epochs) may give a better teacher."),
    (None, ""),  # a pretrained teacher, or given teacher outputs
])
def test_the_teacher_line_says_which_checkpoint_the_teacher_kept(training, sentence):
    table = results_table([{"method": "kl", "seed": 0, "test_accuracy": 0.9}], "accuracy")
    lines = format_table(table, {**TEACHER, "training": training}, SEARCH)
    assert [line for line in lines if line.startswith("Teacher on test")] == [
        "Teacher on test: accuracy 0.9700, NLL 0.1000, ECE 0.0200." + sentence]


def test_a_recommendation_clear_of_kl_on_validation_has_no_caution():
    config = SyntheticConfig(methods=default_methods()[:2], seeds=[0, 1, 2])
    rec = recommend(config, _summaries({"ptloss": ([0.92, 0.93, 0.925], [0.8] * 3),
                                        "kl": ([0.90, 0.905, 0.91], [0.8] * 3)}))
    lines = recommendation_lines(rec, "accuracy")
    assert rec.method == "ptloss" and rec.paired.loc["val_task", "low"] > 0
    assert lines[-2].startswith("  - validation accuracy: +0.0200 [") and not any("Caution" in line for line in lines)
