"""Results read back from MLflow: paired differences, tables, fits and the ``ptdistill report`` page."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from ptdistill.cli import main
from ptdistill.results import (benchmark_report, linear_fit, markdown_table, mean_std, method_table, pair_differences,
                               paired_differences, runs_table)
from ptdistill.tracking import RECIPE_TAG, RECOMMENDED_TAG, Tracker

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")

ACCURACY = {"kl": [0.80, 0.82, 0.81], "ptloss": [0.83, 0.85, 0.845], "focal": [0.79, 0.83, 0.80]}


def _frame(accuracy=ACCURACY) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "seed": s, "test_accuracy": a, "test_nll": 1.0 - a}
                         for m, values in accuracy.items() for s, a in enumerate(values)])


def test_paired_differences_are_same_seed_differences_with_a_t_interval():
    paired = paired_differences(_frame())
    diff = np.array([0.03, 0.03, 0.035])
    half = 4.302652729911275 * diff.std(ddof=1) / np.sqrt(3)  # t(0.975, df=2)
    row = paired.loc["ptloss"]
    assert (row["n"], row["wins"], row["verdict"]) == (3, 3, "better")
    assert row["mean"] == pytest.approx(diff.mean()) and row["std"] == pytest.approx(diff.std(ddof=1))
    assert (row["low"], row["high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert paired.loc["focal", "verdict"] == "no difference" and paired.loc["focal", "wins"] == 1
    assert list(paired.index) == ["ptloss", "focal"] and "kl" not in paired.index


def test_paired_differences_use_only_shared_seeds_and_name_a_missing_baseline():
    frame = _frame({"kl": [0.8, 0.9], "ptloss": [0.85, np.nan]})
    row = paired_differences(frame).loc["ptloss"]
    assert row["n"] == 1 and row["mean"] == pytest.approx(0.05) and row["verdict"] == "one seed"
    with pytest.raises(ValueError, match="baseline 'ce' is not among the methods"):
        paired_differences(frame, baseline="ce")


def test_method_table_and_markdown():
    table = method_table(_frame(), ["test_accuracy", "test_nll", "absent"])
    assert list(table.index) == ["ptloss", "kl", "focal"] and table.loc["kl", "seeds"] == 3
    assert table.loc["kl", "test_accuracy_mean"] == pytest.approx(0.81)
    assert table.loc["kl", "test_accuracy_std"] == pytest.approx(0.01)
    lines = markdown_table(table)
    assert lines[0] == "| method | seeds | test_accuracy | test_nll |"
    assert lines[2] == "| ptloss | 3 | 0.8417 ± 0.0104 | 0.1583 ± 0.0104 |"


def test_markdown_shows_a_missing_value_as_a_dash():
    frame = _frame({"kl": [0.8, 0.9], "ptloss": [0.85, 0.87]})
    frame.loc[frame["method"] == "kl", "test_nll"] = np.nan
    lines = markdown_table(method_table(frame, ["test_accuracy", "test_nll"]))
    assert lines[3] == "| kl | 2 | 0.8500 ± 0.0707 | — |"
    assert markdown_table(pd.DataFrame({"n": [3], "x": [np.nan]}, index=["a"]))[2] == "| a | 3 | — |"


def test_runs_table_puts_each_runs_teacher_beside_its_students():
    frame = pd.concat([_frame().assign(parent_run_name=run, test_accuracy=lambda f, d=shift: f["test_accuracy"] + d)
                       for run, shift in (("strong", 0.02), ("weak", 0.0))])
    parents = {"strong": {"search_teacher_tvd": 0.1, "search_order": 2.0},
               "weak": {"search_teacher_tvd": 0.3, "search_order": 1.0, "teacher_test_accuracy": 0.7}}
    table = runs_table(frame, parents)
    assert list(table.index) == ["strong", "weak"]
    assert list(table.columns) == ["teacher_test_accuracy", "search_teacher_tvd", "search_order", "focal", "kl",
                                   "ptloss"]
    assert table.loc["strong", "kl"] == pytest.approx(0.83) and table.loc["weak", "ptloss"] == pytest.approx(0.8417, abs=1e-4)
    assert np.isnan(table.loc["strong", "teacher_test_accuracy"])
    assert markdown_table(table)[2] == "| strong | — | 0.1000 | 2 | 0.8267 | 0.8300 | 0.8617 |"


def test_pair_differences_compare_named_methods_by_seed():
    pairs = pair_differences(_frame(), [("ptloss", "focal"), ("focal", "kl")])
    assert list(pairs.index) == ["ptloss − focal", "focal − kl"]
    assert pairs.loc["ptloss − focal", "mean"] == pytest.approx(np.mean([0.04, 0.02, 0.045]))
    assert pairs.loc["focal − kl"].equals(paired_differences(_frame()).loc["focal"].rename("focal − kl"))
    assert markdown_table(pairs)[2].startswith("| ptloss − focal | 3 | 0.0350 |")
    with pytest.raises(ValueError, match="pair ptloss,ce: no method 'ce' among"):
        pair_differences(_frame(), [("ptloss", "ce")])


def test_linear_fit_matches_numpy():
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    y = np.array([0.90, 0.86, 0.85, 0.80, 0.78])
    fit = linear_fit(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert (fit["slope"], fit["intercept"]) == pytest.approx((slope, intercept))
    assert fit["r2"] == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2) and fit["n"] == 5


def _tracker(path, shifts: dict[str, float], recommended: dict[str, str] | None = None) -> Tracker:
    """Runs (name -> accuracy shift) of ACCURACY's students; a better run has a lower teacher TVD;
    ``recommended``: run name -> the method its parent's RECOMMENDED_TAG names."""
    tracker = Tracker(f"sqlite:///{path}/mlflow.db")
    for run, shift in shifts.items():
        parent = tracker.start_parent("synthetic", run, tags={}, params={})
        if run in (recommended or {}):
            tracker.set_tags(parent, {RECOMMENDED_TAG: recommended[run]})
        tracker.log_metrics(parent, {"teacher_test_accuracy": 0.85, "search_order": 3,
                                     "search_teacher_tvd": 0.3 - shift})
        for method, values in ACCURACY.items():
            for seed, acc in enumerate(values):
                metrics = {"test_accuracy": acc + shift, "test_nll": 0.4, "test_ece": 0.05}
                if method == "ptloss":
                    metrics["proxy_l2_to_pstar"] = 0.2 - acc / 10
                tracker.log_student(parent, f"{method}-seed{seed}", params={"method": method, "seed": seed},
                                    metrics=metrics, curves={}, artifacts={}, model_dir=None)
    return tracker


@pytest.fixture
def tracker(tmp_path) -> Tracker:
    return _tracker(tmp_path, {"run-a": 0.0, "run-b": 0.01})


@pytest.mark.slow
def test_report_fits_student_accuracy_to_teacher_quality_across_runs(tmp_path):
    runs = {"t1": 0.0, "t2": 0.01, "t3": 0.03}
    text = benchmark_report(_tracker(tmp_path, runs), "synthetic", tmp_path / "out", run_names=list(runs)).read_text()
    # accuracy rises by exactly what the teacher's TVD falls: slope -1 for every method
    assert ("Student test accuracy against teacher val TVD, least squares over the 3 runs: focal: slope -1, R² 1.00"
            in text)
    png = tmp_path / "out" / "synthetic-runs-search_teacher_tvd.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and f"({png.name})" in text
    assert "teacher L2 to p*" not in text  # not logged: no column, no plot


@pytest.mark.slow
def test_benchmark_report_from_mlflow(tracker, tmp_path):
    path = benchmark_report(tracker, "synthetic", tmp_path / "out")
    text = path.read_text()
    assert path == tmp_path / "out" / "synthetic.md" and "Runs: `run-b`" in text
    assert "| ptloss | 3 | 0.8517 ± 0.0104 |" in text  # run-b: accuracies + 0.01
    assert "## Paired differences to `kl`" in text and "| ptloss | 3 | 0.0317 |" in text
    assert "teacher_test_accuracy 0.8500, search_order 3, search_teacher_tvd 0.2900" in text
    assert "Across runs" not in text
    assert "R² 1.000" in text  # proxy distance is exactly linear in accuracy here
    for png in ("synthetic-accuracy.png", "synthetic-paired.png", "synthetic-proxy-distance.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG" and f"({png})" in text

    both = benchmark_report(tracker, "synthetic", tmp_path / "both", run_names=["run-a", "run-b"]).read_text()
    assert "| run-b:ptloss | 3 |" in both and "| run-a:kl | 3 |" in both
    assert "## Across runs" in both and "| run | teacher test acc | teacher val TVD | order | focal | kl | ptloss |" in both
    assert "| run-a | 0.8500 | 0.3000 | 3 | 0.8067 | 0.8100 | 0.8417 |" in both
    assert not (tmp_path / "both" / "synthetic-runs-search_teacher_tvd.png").exists()  # a fit needs 3 teachers
    # paired within each run: run-a:ptloss against run-a:kl, never against the other run's kl
    assert "## Paired differences to each run's `kl`" in both
    assert "| run-a:ptloss | 3 | 0.0317 |" in both and "| run-b:ptloss | 3 | 0.0317 |" in both
    assert "run-a:kl |" not in both.split("## Paired")[1]
    pinned = benchmark_report(tracker, "synthetic", tmp_path / "pin", run_names=["run-a", "run-b"],
                              baseline="run-b:kl").read_text()
    assert "## Paired differences to `run-b:kl`" in pinned and "| run-a:kl | 3 | -0.0100 |" in pinned
    with pytest.raises(ValueError, match="pair ptloss,ce: no method 'ce' among"):
        benchmark_report(tracker, "synthetic", tmp_path / "bad", pairs=[("ptloss", "ce")])
    assert not (tmp_path / "bad").exists()  # nothing written: the pair is checked before any plot
    with pytest.raises(ValueError, match="synthetic: no runs \\['nope'\\] with students in MLflow"):
        benchmark_report(tracker, "synthetic", tmp_path / "x", run_names=["nope"])


@pytest.mark.slow
def test_benchmark_report_marks_each_runs_recommended_method(tmp_path):
    """The mark comes from the parent's tag, set by the run's own report; a run without one (older) has none."""
    tracker = _tracker(tmp_path, {"run-a": 0.0, "run-b": 0.01, "run-c": 0.02}, recommended={"run-a": "kl",
                                                                                           "run-b": "focal"})
    one = benchmark_report(tracker, "synthetic", tmp_path / "one", run_names=["run-b"]).read_text()
    assert "| method | seeds | recommended | test_accuracy | test_nll | test_ece | proxy_l2_to_pstar |" in one
    assert "| focal | 3 | ★ | 0.8167 ± 0.0208 |" in one and "| ptloss | 3 |  | 0.8517 ± 0.0104 |" in one
    assert "★: the method each run's report recommends, chosen on validation only" in one
    both = benchmark_report(tracker, "synthetic", tmp_path / "both", run_names=["run-a", "run-b"]).read_text()
    assert [line.split(" | ")[0] for line in both.splitlines() if "| ★ |" in line] == ["| run-b:focal", "| run-a:kl"]
    untagged = benchmark_report(tracker, "synthetic", tmp_path / "c", run_names=["run-c"]).read_text()
    assert "recommended" not in untagged and "| ptloss | 3 | 0.8617 ± 0.0104 |" in untagged


def test_benchmark_report_says_each_runs_recipe_and_teacher_checkpoint(tmp_path):
    tracker = _tracker(tmp_path, {"run-a": 0.0, "run-b": 0.01})
    parents = {run.info.run_name: run.info.run_id for run in tracker.client.search_runs(
        [tracker.client.get_experiment_by_name("ptdistill-synthetic").experiment_id], "tags.benchmark = 'synthetic'")}
    tracker.set_tags(parents["run-b"], {RECIPE_TAG: "best", "teacher_select": "nll"})
    tracker.log_metrics(parents["run-b"], {"teacher_selected_epoch": 4, "teacher_epochs_run": 9})
    text = benchmark_report(tracker, "synthetic", tmp_path / "out", run_names=["run-a", "run-b"]).read_text()
    assert ("`run-b` (recipe best; teacher checkpoint: epoch 4 of 9, select nll) teacher and proxy search:"
            " teacher_test_accuracy 0.8500" in text)
    assert "`run-a` teacher and proxy search: teacher_test_accuracy 0.8500" in text  # recorded before recipes


@pytest.mark.slow
def test_report_command(tracker, tmp_path, capsys):
    out = tmp_path / "docs"
    assert main(["report", "synthetic", "--out", str(out), "--tracking-uri", tracker.tracking_uri,
                 "--pair", "ptloss,focal"]) == 0
    assert capsys.readouterr().out == f"wrote {out / 'synthetic.md'}\n"
    assert "| ptloss − focal | 3 | 0.0350 |" in (out / "synthetic.md").read_text()
    with pytest.raises(SystemExit):
        main(["report", "synthetic", "--out", str(out), "--pair", "ptloss"])
    assert "expected two method names as A,B, got 'ptloss'" in capsys.readouterr().err
    assert main(["report", "tabular", "--out", str(out), "--tracking-uri", tracker.tracking_uri]) == 2
    assert "tabular: no finished runs" in capsys.readouterr().err


def test_markdown_shows_an_undefined_spread_over_one_seed_as_a_dash():
    frame = _frame({"kl": [0.8], "ptloss": [0.85, 0.87]})
    table = method_table(frame, ["test_accuracy"])
    assert np.isnan(table.loc["kl", "test_accuracy_std"])
    lines = markdown_table(table)
    assert lines[2:] == ["| ptloss | 2 | 0.8600 ± 0.0141 |", "| kl | 1 | 0.8000 ± — |"]
    assert mean_std(0.5, 0.0) == "0.5000 ± 0.0000" and mean_std(0.5, None) == "0.5000"
    assert mean_std(np.nan, np.nan) == "—"
