"""report: the results table over methods and seeds, the recommended method, the champion student, and the
parent run's close.

A spread over one seed is undefined: the table shows "—" for it and no ``_std`` metric is logged.
Students far below their reference on validation are flagged (:func:`flag_students`) in the
table, under it, and with the tag ``ptdistill.flag`` on their MLflow run. The method to deploy is
chosen on validation only (:func:`recommend`): it is marked in the table, described under it with
its paired difference to plain KL, tagged on the parent run, and its best student is the run's
``champion`` candidate.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ptdistill.experiments import ExperimentConfig  # noqa: E402
from ptdistill.results import mean_std, pair_differences  # noqa: E402
from ptdistill.steps.common import RunInfo, log, publish  # noqa: E402
from ptdistill.tracking import RECOMMENDED_TAG, Tracker  # noqa: E402

COLUMNS = ("accuracy", "nll", "ece", "l2_to_pstar")
#: MLflow tag on a flagged student's run: why it is flagged.
FLAG_TAG = "ptdistill.flag"
#: Smallest validation-accuracy gap to the reference that flags a student (see flag_students).
FLAG_MIN_GAP = 0.05
#: The rule, as the report states it.
FLAG_RULE = (f"validation accuracy below the same-seed plain KL student's (the teacher's, for that KL student and"
             f" where the run has no plain KL method) by more than max({FLAG_MIN_GAP}, 2 binomial standard errors"
             f" of that accuracy on the validation rows)")
#: The recommendation rule, as the report states it ({metric}: the run's task metric).
RECOMMEND_RULE = ("the highest mean over seeds of the validation {metric}; on a tie, the run's plain KL method, then"
                  " the method listed first in the config (with lr_grid: methods × rates, in that order)")
#: The paired differences given for the recommended method: summary-row key -> how the report names it.
PAIRED = {"val_task": "validation {metric}", "test_accuracy": "test accuracy (for information only)"}


def results_table(rows: list[dict], task_metric: str) -> pd.DataFrame:
    """Mean and std over seeds of each method's test metrics, best test accuracy first (std NaN for one seed)."""
    frame = pd.DataFrame(rows)
    metrics = [f"test_{m}" for m in (*COLUMNS, task_metric) if f"test_{m}" in frame.columns]
    metrics = list(dict.fromkeys(metrics))
    grouped = frame.groupby("method")[metrics]
    table = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    table["seeds"] = frame.groupby("method").size()
    return table.sort_values("test_accuracy_mean", ascending=False)


def _fmt(table: pd.DataFrame, metric: str, row: str) -> str:
    return mean_std(table.loc[row, f"{metric}_mean"], table.loc[row, f"{metric}_std"])


def _kl_references(config: ExperimentConfig) -> dict[str, str]:
    """Method (``lr_grid`` variant) name -> the run's plain KL method at the same rate; {} without one.

    Plain KL: loss ``kl`` with no hyper-parameters, learning from the teacher (the first such method).
    """
    plain = [i for i, m in enumerate(config.methods) if m.loss == "kl" and not m.params and m.targets == "teacher"]
    if not plain:
        return {}
    rates = max(1, len(config.lr_grid))
    names = [v.name for v in config.variants()]  # methods x rates, in that order
    return {name: names[plain[0] * rates + i % rates] for i, name in enumerate(names)}


class Recommendation(NamedTuple):
    """What :func:`recommend` chose, and how it compares with the run's plain KL method."""

    method: str  #: the method (``lr_grid`` variant) name, as in the summary rows
    val_task_mean: float  #: its mean validation task metric over seeds
    seeds: int  #: its number of students
    baseline: str | None  #: the run's plain KL at the same rate (``method`` itself when it is KL); None without one
    paired: pd.DataFrame | None  #: index PAIRED's keys; :func:`~ptdistill.results.paired_differences`'s columns
    #: (n, mean, std, low, high, wins, verdict), method minus baseline on the same seed; None without a baseline
    #: other than the method itself


def _validation_means(summaries: list[dict]) -> pd.Series:
    """Method -> mean ``val_task`` over its seeds, rounded to 12 decimals: the means of equal scores in another
    order can differ in the last bit, and must tie."""
    return pd.DataFrame(summaries).groupby("method")["val_task"].mean().round(12)


def recommend(config: ExperimentConfig, summaries: list[dict]) -> Recommendation:
    """The method to deploy: the highest mean ``val_task`` over seeds, never a test metric (RECOMMEND_RULE).

    Every method and ``lr_grid`` variant competes (the variant with the best validation score is also
    the rate :func:`lr_choices` picks for its method). On a tie (:func:`_validation_means`) the run's
    plain KL method wins (the simpler baseline), then the variant that comes first in
    ``config.variants()``. The paired differences to plain KL (:func:`_kl_references`) are over the
    seeds both have, on the validation task metric and, for information, on test accuracy, with a 95%
    Student-t interval (NaN for one seed).
    """
    frame = pd.DataFrame(summaries)
    means = _validation_means(summaries)
    references = _kl_references(config)
    plain = set(references.values())
    order = [v.name for v in config.variants() if v.name in means.index]
    method = max(order, key=lambda name: (means[name], name in plain))  # max keeps the first of equal keys
    baseline = references.get(method)
    paired = None
    if baseline is not None and baseline != method:
        paired = pd.DataFrame({metric: pair_differences(frame, [(method, baseline)], metric).iloc[0]
                               for metric in PAIRED}).T.astype({"n": int, "wins": int})
    return Recommendation(method, float(means[method]), int((frame["method"] == method).sum()), baseline, paired)


def recommendation_lines(rec: Recommendation, task_metric: str) -> list[str]:
    """Markdown lines stating the recommended method, the rule, and its paired differences to plain KL."""
    lines = ["", f"**Recommended: {rec.method}** (★), chosen on validation only: mean validation {task_metric}"
                 f" {rec.val_task_mean:.4f} over {rec.seeds} seed{'s' if rec.seeds > 1 else ''}.",
             f"Rule: {RECOMMEND_RULE.format(metric=task_metric)}. Test figures are for information only; they play"
             f" no part in the choice.", ""]
    if rec.paired is None:
        lines.append(f"- {rec.method} is the run's plain KL method: no paired difference to KL."
                     if rec.baseline == rec.method else
                     "- The run has no plain KL method (loss kl, no parameters, learning from the teacher):"
                     " no paired difference to KL.")
        return lines
    lines.append(f"- Paired difference to {rec.baseline} ({rec.method} − {rec.baseline}, same seed; mean over"
                 f" seeds, 95% Student-t interval):")
    for metric, label in PAIRED.items():
        row = rec.paired.loc[metric]
        interval = f"[{row['low']:+.4f}, {row['high']:+.4f}]" if row["n"] > 1 else "[—] (one seed: no interval)"
        lines.append(f"  - {label.format(metric=task_metric)}: {row['mean']:+.4f} {interval},"
                     f" {row['wins']}/{row['n']} seeds better")
    val = rec.paired.loc["val_task"]
    if val["n"] < 2 or val["low"] <= 0:
        lines.append(f"- Caution: on validation, {rec.method} is not distinguishable from {rec.baseline}"
                     f" ({'one seed' if val['n'] < 2 else 'the interval includes 0'}); {rec.baseline} is as"
                     " sound a choice, and more seeds would tell them apart.")
    return lines


def recommendation_metrics(recommendation: Recommendation) -> dict[str, float]:
    """The parent run's metrics on the recommendation: its mean validation task metric and, against plain
    KL, each paired difference with its interval (no bounds where undefined: one seed)."""
    metrics = {"recommended_val_task_mean": recommendation.val_task_mean}
    if recommendation.paired is None:
        return metrics
    for metric, row in recommendation.paired.iterrows():
        for stat, suffix in (("mean", ""), ("low", "_low"), ("high", "_high")):
            if not pd.isna(row[stat]):
                metrics[f"recommended_vs_kl_{metric}_diff{suffix}"] = float(row[stat])
    return metrics


def flag_students(config: ExperimentConfig, summaries: list[dict], search: dict) -> dict[tuple[str, int], str]:
    """(method, seed) -> why, for each student whose validation accuracy is far below its reference.

    The reference is the same-seed student of the run's plain KL method (with ``lr_grid``: at the
    same rate), the baseline every method is compared with; for that KL student itself, and for
    every student when the run has none, the teacher's validation accuracy (``search``'s
    ``teacher_accuracy``). Far below: by more than ``max(0.05, 2 * sqrt(a * (1 - a) / n))``, ``a``
    the reference's accuracy and ``n`` the validation rows: twice the standard error of an
    accuracy measured on ``n`` rows, never under 5 points. It catches a student collapsed onto one
    class (a PTLoss student on coefficients fitted to a tiny validation split), not the few
    points a smaller student or another loss costs.
    """
    references = _kl_references(config)
    by_key = {(r["method"], r["seed"]): r for r in summaries}
    n = search["validation_rows"]
    flags = {}
    for row in summaries:
        key = (row["method"], row["seed"])
        name = references.get(row["method"], row["method"])
        reference = by_key.get((name, row["seed"])) if name != row["method"] else None
        if reference is not None:
            accuracy, what = reference["val_accuracy"], f"{name}-seed{row['seed']}"
        else:
            accuracy, what = search["teacher_accuracy"], "the teacher"
        margin = max(FLAG_MIN_GAP, 2 * math.sqrt(accuracy * (1 - accuracy) / n))
        if row["val_accuracy"] < accuracy - margin:
            flags[key] = (f"far below {what}: validation accuracy {row['val_accuracy']:.4f} against"
                          f" {accuracy:.4f}, a gap over the margin {margin:.4f} ({n} validation rows)")
    return flags


def format_table(table: pd.DataFrame, teacher: dict, search: dict,
                 flags: dict[tuple[str, int], str] | None = None,
                 recommendation: Recommendation | None = None, task_metric: str = "accuracy") -> list[str]:
    """Markdown lines: one row per method (a "recommended" column marking ``recommendation``'s method with
    ★, a "flag" column when a student is flagged), then the recommendation (its ``task_metric`` on
    validation), the flagged students and the rule, the search's warnings, the teacher and the proxy teacher."""
    flags = flags or {}
    metrics = [m[: -len("_mean")] for m in table.columns if m.endswith("_mean")]
    head = ["method", "seeds", *[m.removeprefix("test_") for m in metrics],
            *(["recommended"] if recommendation is not None else []), *(["flag"] if flags else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in table.index:
        cells = [method, str(int(table.loc[method, "seeds"])), *[_fmt(table, m, method) for m in metrics]]
        if recommendation is not None:
            cells.append("★" if method == recommendation.method else "")
        if flags:
            seeds = [str(seed) for m, seed in flags if m == method]
            cells.append(f"⚠ far below, seed {', '.join(seeds)}" if seeds else "")
        lines.append("| " + " | ".join(cells) + " |")
    if recommendation is not None:
        lines += recommendation_lines(recommendation, task_metric)
    if flags:
        lines += ["", f"⚠ Flagged students ({FLAG_RULE}):"]
        lines += [f"- {method}-seed{seed}: {why}" for (method, seed), why in flags.items()]
    lines += [f"⚠ Proxy search: {note}" for note in search.get("warnings", [])]
    lines += [
        "",
        f"Teacher on test: accuracy {teacher.get('accuracy', float('nan')):.4f}, NLL {teacher.get('nll', float('nan')):.4f}, "
        f"ECE {teacher.get('ece', float('nan')):.4f}{_source(teacher.get('source'))}.{_checkpoint(teacher.get('training'))}",
        f"Validation TVD to labels: teacher {search['teacher_tvd']:.4f}, proxy teacher {search['proxy_tvd']:.4f} "
        f"(search: {search['strategy']}, criterion {search['criterion']}, order {search['order']}); the proxy "
        f"teacher overturns {search['proxy_flips']:.4f} of the teacher's {search['validation_rows']} validation "
        f"decisions.",
    ]
    if "proxy_l2_to_pstar" in search:
        lines.append(f"Validation L2 to the true posterior: teacher {search['teacher_l2_to_pstar']:.4f}, "
                     f"proxy teacher {search['proxy_l2_to_pstar']:.4f}.")
    return lines


def _source(source: dict | None) -> str:
    """Where given teacher outputs came from (``teacher.outputs``), for the report's teacher line."""
    if not source:
        return ""
    kind = f"{source['kind'].replace('_', '-')}{', detected' if source['detected'] else ''}"
    return f" (from the given teacher outputs {source['uri']}, sha256 {source['sha256'][:12]}, {kind}; no teacher run)"


def _checkpoint(training: dict | None) -> str:
    """Which epoch's weights the teacher kept (``History.selection``), for the report's teacher line;
    "" for a teacher not trained in the run (pretrained, or given outputs)."""
    if training is None:
        return ""
    n, select = training["epochs_run"], training["select"]
    if select == "last":
        which = f"final weights after {n} epoch{'s' if n != 1 else ''} (select last)"
    else:
        stopped = ", stopped early" if training["stopped_early"] else ""
        which = f"epoch {training['epoch']} of {n} run (select {select}{stopped})"
    if training["epoch"] is None:
        return f" Teacher checkpoint: {which}, no validation scores."
    line = (f" Teacher checkpoint: {which}, validation NLL {training['val_nll']:.4f}, accuracy "
            f"{training['val_accuracy']:.4f}, ECE {training['val_ece']:.4f}.")
    if select != "last" and training["epoch"] == n and n > 1:
        line += (f" The kept epoch is the last one: validation {select} was still improving, so more epochs"
                 " (teacher.train.epochs) may give a better teacher.")
    return line


def lr_choices(config: ExperimentConfig, summaries: list[dict], table: pd.DataFrame) -> list[str]:
    """With ``lr_grid``: each method's learning rate chosen on mean validation task metric (paper protocol)."""
    if not config.lr_grid:
        return []
    validation = _validation_means(summaries)
    lines = ["", f"Learning rate chosen per method on validation {config.task_metric} (mean over seeds):"]
    variants = config.variants()
    for i, method in enumerate(config.methods):
        names = [v.name for v in variants[i * len(config.lr_grid):(i + 1) * len(config.lr_grid)]]
        best = max(names, key=lambda name: validation[name])
        lines.append(f"- {method.name}: lr {best.rsplit('-lr', 1)[1]} (validation {validation[best]:.4f});"
                     f" test accuracy {_fmt(table, 'test_accuracy', best)}")
    return lines


def _plot(table: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    std = table["test_accuracy_std"].fillna(0.0)  # one seed: no error bar
    ax.barh(table.index[::-1], table["test_accuracy_mean"][::-1], xerr=std[::-1], capsize=3)
    lo = (table["test_accuracy_mean"] - 2 * std).min()
    ax.set_xlim(max(0.0, lo - 0.01), min(1.0, table["test_accuracy_mean"].max() + 0.02))
    ax.set_xlabel("test accuracy (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(
    config: ExperimentConfig, info: RunInfo, summaries: list[dict], search: dict, teacher: dict,
    markdown_path: Path, html_path: Path, out_dir: Path,
) -> dict:
    """Write the Markdown and HTML report, register the recommended method's best student as the champion
    candidate, tag the recommendation on the parent run and close it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = results_table(summaries, config.task_metric)
    flags = flag_students(config, summaries, search)
    recommended = recommend(config, summaries)
    lines = [f"# ptdistill {info.benchmark}: {info.run_name}", "",
             f"Student test metrics over seeds {config.seeds} (data fingerprint `{info.fingerprint[:12]}`).", "",
             config.recipe_line(), "",
             *format_table(table, teacher, search, flags, recommended, config.task_metric),
             *lr_choices(config, summaries, table)]
    plot = _plot(table, out_dir / "accuracy.png")
    markdown = "\n".join(lines) + "\n"
    Path(markdown_path).write_text(markdown)
    image = base64.b64encode(plot.read_bytes()).decode()
    marked = table.assign(recommended=["★" if m == recommended.method else "" for m in table.index])
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines if not line.startswith("|"))
    page = (
        f"<html><head><meta charset='utf-8'><title>ptdistill {html.escape(info.benchmark)}</title></head><body>"
        f"{marked.to_html(float_format=lambda v: f'{v:.4f}', na_rep='—')}{body}"
        f"<img src='data:image/png;base64,{image}'/></body></html>"
    )
    Path(html_path).write_text(page)
    (out_dir / "report.md").write_text(markdown)
    (out_dir / "report.html").write_text(page)
    (out_dir / "students.json").write_text(json.dumps(summaries, indent=1))
    tracker = Tracker(info.tracking_uri)
    for row in summaries:
        why = flags.get((row["method"], row["seed"]))
        if why:
            log.warning("report: %s-seed%s is %s", row["method"], row["seed"], why)
            tracker.set_tags(row["run_id"], {FLAG_TAG: why})
    best = max((r for r in summaries if r["method"] == recommended.method), key=lambda r: r["val_task"])
    champion = tracker.promote_champion(info.benchmark, best["run_id"], best["val_task"])
    tracker.set_tags(info.parent_run_id, {RECOMMENDED_TAG: recommended.method})
    tracker.log_parent_artifacts(info.parent_run_id, [out_dir / "report.md", out_dir / "report.html", plot,
                                                      out_dir / "students.json"])
    tracker.finish_parent(info.parent_run_id, metrics={  # no std where it is undefined (one seed)
        f"test_accuracy_{stat}_{m}": float(table.loc[m, f"test_accuracy_{stat}"]) for m in table.index
        for stat in ("mean", "std") if not pd.isna(table.loc[m, f"test_accuracy_{stat}"])
    } | recommendation_metrics(recommended))
    publish(info, "report", out_dir)
    log.info("report:\n%s", markdown)
    return {"table": json.loads(table.to_json(orient="index")), "champion": champion, "best_run": best["run_id"],
            "recommended": recommended.method, "markdown": markdown}
