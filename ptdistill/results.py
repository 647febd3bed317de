"""Results across runs, read back from MLflow: tables, paired comparisons with confidence
intervals, and plots, written as Markdown for ``ptdistill report`` and ``docs/results.md``.

Why paired differences: every method of a run is trained with the same seeds on the same data
and teacher, so seed-to-seed noise (initialisation, batch order) is shared by the methods of a
seed. The difference to the baseline *within* a seed removes that shared part, and its mean over
seeds, with a Student-t interval, says whether a method beats the baseline by more than the
noise. With 3 seeds the interval is wide (t = 4.30 at 95%): a difference is only called when
the interval excludes 0.
"""

from __future__ import annotations

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from ptdistill.hints import ptdistill_command  # noqa: E402
from ptdistill.tracking import RECIPE_TAG, RECOMMENDED_TAG  # noqa: E402

__all__ = ["benchmark_report", "linear_fit", "markdown_table", "mean_std", "method_table", "pair_differences",
           "paired_differences", "plot_methods", "plot_paired", "plot_scatter", "plot_teacher_quality", "runs_table"]


def method_table(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each method (rows), best mean test accuracy first."""
    metrics = [m for m in metrics if m in frame.columns and frame[m].notna().any()]
    grouped = frame.groupby("method")[metrics]
    table = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    table.insert(0, "seeds", frame.groupby("method").size())
    order = "test_accuracy_mean" if "test_accuracy_mean" in table.columns else table.columns[1]
    return table.sort_values(order, ascending=False)


def paired_differences(frame: pd.DataFrame, metric: str = "test_accuracy", baseline: str = "kl",
                       confidence: float = 0.95) -> pd.DataFrame:
    """Per method: ``metric`` minus the baseline's on the same seed, over the seeds both have.

    Columns: n (seeds), mean, std, low, high (Student-t ``confidence`` interval of the mean;
    NaN with one seed), wins (seeds where the method is strictly better, for metrics where
    higher is better) and verdict ("better", "worse" or "no difference": the interval's sign).
    """
    if baseline not in set(frame["method"]):
        raise ValueError(f"baseline {baseline!r} is not among the methods {sorted(set(frame['method']))}")
    wide = frame.pivot_table(index="seed", columns="method", values=metric, aggfunc="first")
    rows = []
    for method in wide.columns:
        if method == baseline:
            continue
        both = wide[[method, baseline]].dropna()
        diff = (both[method] - both[baseline]).to_numpy()
        n = len(diff)
        mean = float(diff.mean()) if n else float("nan")
        std = float(diff.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
        low, high = mean - half, mean + half
        verdict = "better" if low > 0 else "worse" if high < 0 else "no difference"
        rows.append({"method": method, "n": n, "mean": mean, "std": std, "low": low, "high": high,
                     "wins": int((diff > 0).sum()), "verdict": verdict if n > 1 else "one seed"})
    return pd.DataFrame(rows).set_index("method").sort_values("mean", ascending=False)


def pair_differences(frame: pd.DataFrame, pairs: Sequence[tuple[str, str]], metric: str = "test_accuracy",
                     confidence: float = 0.95) -> pd.DataFrame:
    """:func:`paired_differences` of ``a`` to ``b`` for each pair, one row per pair named ``a − b``."""
    rows = []
    for a, b in pairs:
        missing = [m for m in (a, b) if m not in set(frame["method"])]
        if missing:
            raise ValueError(f"pair {a},{b}: no method {missing[0]!r} among {sorted(set(frame['method']))}")
        row = paired_differences(frame[frame["method"].isin([a, b])], metric, b, confidence).loc[a]
        rows.append(row.rename(f"{a} − {b}"))
    return pd.DataFrame(rows).rename_axis("pair").astype({"n": int, "wins": int})


def linear_fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line y = slope * x + intercept, its R^2 and the Pearson correlation's p-value."""
    result = stats.linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return {"slope": float(result.slope), "intercept": float(result.intercept), "r2": float(result.rvalue**2),
            "p": float(result.pvalue), "n": int(len(x))}


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> list[str]:
    """A DataFrame (index included) as Markdown lines; ``x_mean``/``x_std`` pairs become ``x`` as "mean ± std"
    (:func:`mean_std`: "± —" over one seed)."""
    frame = frame.copy()
    for column in [c for c in frame.columns if c.endswith("_mean")]:
        name = column[: -len("_mean")]
        std = frame.pop(f"{name}_std") if f"{name}_std" in frame.columns else None
        mean = frame.pop(column)
        frame[name] = [mean_std(m, s, digits) for m, s in zip(mean, std if std is not None else [None] * len(mean))]
    head = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for index, *row in frame.itertuples(name=None):  # per column, so int columns stay ints
        cells = [_number(v, digits) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join([str(index), *cells]) + " |")
    return lines


def mean_std(mean: float, std: float | None, digits: int = 4) -> str:
    """A "mean ± std" cell: "—" for a missing mean, "mean ± —" where the spread is undefined (NaN:
    one seed), the mean alone where there is no std (None)."""
    if std is None or np.isnan(mean):
        return _number(mean, digits)
    return f"{_number(mean, digits)} ± {_number(std, digits)}"


def _number(value: float, digits: int) -> str:
    """A table cell: the value rounded, or an em dash where it is missing (NaN)."""
    return "—" if np.isnan(value) else f"{value:.{digits}f}"


def plot_methods(table: pd.DataFrame, path: Path, metric: str = "test_accuracy", title: str = "") -> Path:
    """Horizontal bars of each method's mean ``metric`` with a ±std error bar."""
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(table) + 1.2))
    ax.barh(table.index[::-1], table[f"{metric}_mean"][::-1], xerr=table[f"{metric}_std"].fillna(0)[::-1], capsize=3)
    span = table[f"{metric}_mean"]
    ax.set_xlim(max(0.0, span.min() - 0.03), min(1.0, span.max() + 0.02) if metric.endswith("accuracy") else None)
    ax.set_xlabel(f"{metric.replace('_', ' ')} (mean ± std over seeds)")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_paired(paired: pd.DataFrame, path: Path, baseline: str, metric: str = "test_accuracy",
                title: str = "") -> Path:
    """Each method's mean paired difference to the baseline with its confidence interval."""
    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(paired) + 1.2))
    y = np.arange(len(paired))[::-1]
    err = np.vstack([paired["mean"] - paired["low"], paired["high"] - paired["mean"]])
    ax.errorbar(paired["mean"], y, xerr=np.nan_to_num(err), fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(y, paired.index)
    ax.set_xlabel(f"{metric.replace('_', ' ')} minus {baseline}, same seed (mean, 95% CI)")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_scatter(x: np.ndarray, y: np.ndarray, path: Path, xlabel: str, ylabel: str, title: str = "",
                 labels: Sequence[str] | None = None) -> Path:
    """Points with their least-squares line and R^2 in the legend."""
    fit = linear_fit(x, y)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    ax.scatter(x, y, s=18)
    for text, xi, yi in zip(labels or (), x, y):
        ax.annotate(text, (xi, yi), fontsize=7, xytext=(3, 2), textcoords="offset points")
    grid = np.linspace(np.min(x), np.max(x), 50)
    ax.plot(grid, fit["slope"] * grid + fit["intercept"], color="C1",
            label=f"fit: slope {fit['slope']:.3g}, R² {fit['r2']:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: Student metrics shown in a report's table, when the runs have them.
REPORT_METRICS = ("test_accuracy", "test_nll", "test_ece", "test_task", "test_l2_to_pstar", "proxy_l2_to_pstar")
#: Parent-run metrics quoted under the table: the teacher on test and the proxy search on validation.
PARENT_METRICS = ("teacher_test_accuracy", "teacher_test_nll", "teacher_test_ece", "teacher_test_l2_to_pstar",
                  "search_order", "search_teacher_tvd", "search_proxy_tvd", "search_teacher_l2_to_pstar",
                  "search_proxy_l2_to_pstar")
#: Parent-run metrics of the across-runs table (teacher quality and the search's pick), and their column titles.
RUN_METRICS = ("teacher_test_accuracy", "search_teacher_tvd", "teacher_test_l2_to_pstar", "search_order",
               "search_proxy_tvd", "search_proxy_l2_to_pstar")
#: Teacher-quality columns of the across-runs table that get a plot: the paper's Fig. 4a measure
#: (validation TVD to the labels) and, where p* is known, the distance to the truth itself.
TEACHER_QUALITY = ("search_teacher_tvd", "teacher_test_l2_to_pstar")
RUN_METRIC_LABELS = {"teacher_test_accuracy": "teacher test acc", "search_teacher_tvd": "teacher val TVD",
                     "teacher_test_l2_to_pstar": "teacher L2 to p*", "search_order": "order",
                     "search_proxy_tvd": "proxy val TVD", "search_proxy_l2_to_pstar": "proxy val L2 to p*"}


def runs_table(frame: pd.DataFrame, parents: dict[str, dict[str, float]], metric: str = "test_accuracy",
               parent_metrics: Sequence[str] = RUN_METRICS) -> pd.DataFrame:
    """One row per run (``frame``'s ``parent_run_name``, in order): the run's teacher and search
    metrics from ``parents`` (run name -> parent metrics), then each method's mean ``metric``
    over seeds, as ``<method>`` columns (``frame``'s ``method`` is the bare method name)."""
    runs = list(dict.fromkeys(frame["parent_run_name"]))
    table = pd.DataFrame([{k: parents[r].get(k, np.nan) for k in parent_metrics} for r in runs],
                         index=pd.Index(runs, name="run"))
    table = table.loc[:, table.notna().any()]
    if "search_order" in table.columns:
        table["search_order"] = table["search_order"].astype("Int64")
    means = frame.pivot_table(index="parent_run_name", columns="method", values=metric, aggfunc="mean")
    return table.join(means.reindex(runs))


def plot_teacher_quality(table: pd.DataFrame, methods: Sequence[str], path: Path, x: str = "search_teacher_tvd",
                         metric: str = "test_accuracy", title: str = "") -> Path:
    """Each method's mean student ``metric`` against a teacher-quality column ``x``, one point per run."""
    ordered = table.sort_values(x)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for method in methods:
        ax.plot(ordered[x], ordered[method], "o-", label=method)
    common = len(os.path.commonprefix(list(ordered.index)))  # "exp5-teacher-epochs-2" -> "2"
    for run_name, xi, yi in zip(ordered.index, ordered[x], ordered[methods[0]]):
        ax.annotate(run_name[common:] or run_name, (xi, yi), fontsize=7, xytext=(3, 2), textcoords="offset points")
    if common:
        ax.text(0.01, 0.01, f"points: {ordered.index[0][:common]}…", transform=ax.transAxes, fontsize=7)
    ax.set_xlabel(RUN_METRIC_LABELS.get(x, x))
    ax.set_ylabel(f"student {metric.replace('_', ' ')} (mean over seeds)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def benchmark_report(tracker, benchmark: str, out_dir: Path, run_names: list[str] | None = None,
                     baseline: str = "kl", pairs: Sequence[tuple[str, str]] | None = None) -> Path:
    """``<out_dir>/<benchmark>.md`` and its PNGs from the benchmark's latest run (or the named runs).

    With several runs, methods are labelled ``<run>:<method>``; a bare ``baseline`` is then each
    run's own (paired within the run: same teacher, same seeds), and a section compares the runs'
    teachers and searches with their students. A method the run's report recommended (parent tag
    RECOMMENDED_TAG) is marked ★ in the table. ``pairs`` adds a table of ``a - b`` paired by seed
    for each (a, b), e.g. searched against random coefficients of the same order. Raises
    ValueError when MLflow has no such runs or a pair names a method they lack.
    """
    out_dir = Path(out_dir)
    frame = tracker.latest_students(benchmark, n_parents=1, run_names=run_names)
    if frame.empty:
        wanted = f"runs {run_names}" if run_names else "finished runs"
        raise ValueError(f"{benchmark}: no {wanted} with students in MLflow ({tracker.tracking_uri}); run "
                         f"`{ptdistill_command('run', benchmark)}` first")
    runs = list(dict.fromkeys(frame["parent_run_name"]))
    parent_runs = {run_name: tracker.client.get_run(parent_id)
                   for parent_id, run_name in zip(dict.fromkeys(frame["parent_run_id"]), runs)}
    parents = {run_name: run.data.metrics for run_name, run in parent_runs.items()}
    recommended = {run_name: run.data.tags[RECOMMENDED_TAG] for run_name, run in parent_runs.items()
                   if RECOMMENDED_TAG in run.data.tags}
    bare = frame
    if len(runs) > 1:
        frame = frame.assign(method=frame["parent_run_name"] + ":" + frame["method"])
        recommended = {run_name: f"{run_name}:{method}" for run_name, method in recommended.items()}
    compared = pair_differences(frame, pairs) if pairs else None  # a bad pair fails before any file is written
    lines = [f"# {benchmark}", "", f"Runs: {', '.join(f'`{r}`' for r in runs)} (MLflow experiment "
             f"`ptdistill-{benchmark}`). Students: mean ± std over seeds on the test split.", ""]
    same = "test_task" in frame.columns and frame["test_task"].equals(frame["test_accuracy"])
    table = method_table(frame, [m for m in REPORT_METRICS if not (same and m == "test_task")])
    if recommended:  # runs from before the tag existed have no recommendation
        marks = set(recommended.values())
        lines += markdown_table(table.assign(recommended=["★" if m in marks else "" for m in table.index]))
        lines += ["", "★: the method each run's report recommends, chosen on validation only (highest mean"
                  " validation task metric over seeds), never on these test figures."]
    else:
        lines += markdown_table(table)
    lines += ["", f"![{benchmark}: test accuracy]({plot_methods(table, out_dir / f'{benchmark}-accuracy.png', title=benchmark).name})"]
    for run, metrics in parents.items():
        quoted = ", ".join(f"{k} {metrics[k]:.0f}" if k == "search_order" else f"{k} {metrics[k]:.4f}"
                           for k in PARENT_METRICS if k in metrics)
        protocol = _run_protocol(parent_runs[run].data.tags, metrics)
        lines += ["", f"`{run}` {protocol}teacher and proxy search: {quoted}."]
    if len(runs) > 1:
        across = runs_table(bare, parents)
        methods = list(dict.fromkeys(bare["method"]))
        lines += ["", "## Across runs: teacher and search against the students' mean test accuracy", "",
                  *markdown_table(across.rename(columns=RUN_METRIC_LABELS))]
        for x in TEACHER_QUALITY:  # where the runs' teachers differ: student accuracy against teacher quality
            if x not in across.columns or across[x].nunique() < 3:
                continue
            fits = {m: linear_fit(across[x], across[m]) for m in methods}
            png = plot_teacher_quality(across, methods, out_dir / f"{benchmark}-runs-{x}.png", x=x, title=benchmark)
            lines += ["", f"Student test accuracy against {RUN_METRIC_LABELS[x]}, least squares over the "
                      f"{len(across)} runs: " + "; ".join(f"{m}: slope {f['slope']:.3g}, R² {f['r2']:.2f}, "
                                                         f"p = {f['p']:.2g}" for m, f in fits.items()) + ".",
                      "", f"![{x}]({png.name})"]
    paired = _paired_to_baseline(frame, runs, baseline)
    if paired is not None:
        against = f"each run's `{baseline}`" if len(runs) > 1 and ":" not in baseline else f"`{baseline}`"
        lines += ["", f"## Paired differences to {against} (test accuracy, same seed, 95% t-interval)", "",
                  *markdown_table(paired), "",
                  f"![paired]({plot_paired(paired, out_dir / f'{benchmark}-paired.png', baseline, title=benchmark).name})"]
    if compared is not None:
        lines += ["", "## Paired comparisons (test accuracy, first minus second, same seed, 95% t-interval)", "",
                  *markdown_table(compared)]
    if "proxy_l2_to_pstar" in frame.columns and frame["proxy_l2_to_pstar"].notna().sum() >= 3:
        points = frame.dropna(subset=["proxy_l2_to_pstar"])
        fit = linear_fit(points["proxy_l2_to_pstar"], points["test_accuracy"])
        png = plot_scatter(points["proxy_l2_to_pstar"].to_numpy(), points["test_accuracy"].to_numpy(),
                           out_dir / f"{benchmark}-proxy-distance.png", "proxy teacher's mean L2 distance to p*",
                           "student test accuracy", title=f"{benchmark}: PTLoss students",
                           labels=list(points["method"]))
        lines += ["", "## Proxy teacher's distance to p* vs student accuracy", "",
                  f"Least squares over {fit['n']} PTLoss students: slope {fit['slope']:.4g}, R² {fit['r2']:.3f}, "
                  f"p = {fit['p']:.3g}.", "", f"![proxy distance]({png.name})"]
    path = out_dir / f"{benchmark}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_protocol(tags: dict[str, str], metrics: dict[str, float]) -> str:
    """"(recipe best; teacher checkpoint: epoch 4 of 9, select nll) " from a parent run's tags and
    metrics; "" for a run recorded before recipes and checkpoint selection existed."""
    parts = [f"recipe {tags[RECIPE_TAG]}"] if RECIPE_TAG in tags else []
    if "teacher_selected_epoch" in metrics:
        parts.append(f"teacher checkpoint: epoch {metrics['teacher_selected_epoch']:.0f} of"
                     f" {metrics['teacher_epochs_run']:.0f}, select {tags.get('teacher_select', '?')}")
    return f"({'; '.join(parts)}) " if parts else ""


def _paired_to_baseline(frame: pd.DataFrame, runs: list[str], baseline: str) -> pd.DataFrame | None:
    """Paired differences to ``baseline`` (with several runs and a bare name: each run's own),
    or None when there is nothing to pair."""
    methods = set(frame["method"])
    if len(runs) == 1 or ":" in baseline:
        if baseline not in methods or len(methods) < 2:
            return None
        return paired_differences(frame, "test_accuracy", baseline)
    parts = [paired_differences(group, "test_accuracy", f"{run}:{baseline}")
             for run, group in frame.groupby("parent_run_name", sort=False)
             if f"{run}:{baseline}" in methods and group["method"].nunique() > 1]
    return pd.concat(parts) if parts else None
