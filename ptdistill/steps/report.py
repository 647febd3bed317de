"""report: the results table over methods and seeds, the champion student, and the parent run's close."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ptdistill.experiments import ExperimentConfig  # noqa: E402
from ptdistill.steps.common import RunInfo, log, publish  # noqa: E402
from ptdistill.tracking import Tracker  # noqa: E402

COLUMNS = ("accuracy", "nll", "ece", "l2_to_pstar")


def results_table(rows: list[dict], task_metric: str) -> pd.DataFrame:
    """Mean and std over seeds of each method's test metrics, best test accuracy first."""
    frame = pd.DataFrame(rows)
    metrics = [f"test_{m}" for m in (*COLUMNS, task_metric) if f"test_{m}" in frame.columns]
    metrics = list(dict.fromkeys(metrics))
    grouped = frame.groupby("method")[metrics]
    table = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).fillna(0.0).add_suffix("_std"))
    table["seeds"] = frame.groupby("method").size()
    return table.sort_values("test_accuracy_mean", ascending=False)


def _fmt(table: pd.DataFrame, metric: str, row: str) -> str:
    return f"{table.loc[row, f'{metric}_mean']:.4f} ± {table.loc[row, f'{metric}_std']:.4f}"


def format_table(table: pd.DataFrame, teacher: dict, search: dict) -> list[str]:
    """Markdown lines: one row per method, then the teacher and the proxy teacher."""
    metrics = [m[: -len("_mean")] for m in table.columns if m.endswith("_mean")]
    head = ["method", "seeds", *[m.removeprefix("test_") for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in table.index:
        cells = [method, str(int(table.loc[method, "seeds"])), *[_fmt(table, m, method) for m in metrics]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Teacher on test: accuracy {teacher.get('accuracy', float('nan')):.4f}, NLL {teacher.get('nll', float('nan')):.4f}, "
        f"ECE {teacher.get('ece', float('nan')):.4f}.",
        f"Validation TVD to labels: teacher {search['teacher_tvd']:.4f}, proxy teacher {search['proxy_tvd']:.4f} "
        f"(search: {search['strategy']}, criterion {search['criterion']}, order {search['order']}).",
    ]
    if "proxy_l2_to_pstar" in search:
        lines.append(f"Validation L2 to the true posterior: teacher {search['teacher_l2_to_pstar']:.4f}, "
                     f"proxy teacher {search['proxy_l2_to_pstar']:.4f}.")
    return lines


def lr_choices(config: ExperimentConfig, summaries: list[dict], table: pd.DataFrame) -> list[str]:
    """With ``lr_grid``: each method's learning rate chosen on mean validation task metric (paper protocol)."""
    if not config.lr_grid:
        return []
    validation = pd.DataFrame(summaries).groupby("method")["val_task"].mean()
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
    ax.barh(table.index[::-1], table["test_accuracy_mean"][::-1], xerr=table["test_accuracy_std"][::-1], capsize=3)
    lo = (table["test_accuracy_mean"] - 2 * table["test_accuracy_std"]).min()
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
    """Write the Markdown and HTML report, register the champion, close the parent run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = results_table(summaries, config.task_metric)
    lines = [f"# ptdistill {info.benchmark}: {info.run_name}", "",
             f"Student test metrics over seeds {config.seeds} (data fingerprint `{info.fingerprint[:12]}`).", "",
             *format_table(table, teacher, search), *lr_choices(config, summaries, table)]
    plot = _plot(table, out_dir / "accuracy.png")
    markdown = "\n".join(lines) + "\n"
    Path(markdown_path).write_text(markdown)
    image = base64.b64encode(plot.read_bytes()).decode()
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines if not line.startswith("|"))
    page = (
        f"<html><head><meta charset='utf-8'><title>ptdistill {html.escape(info.benchmark)}</title></head><body>"
        f"{table.to_html(float_format=lambda v: f'{v:.4f}')}{body}"
        f"<img src='data:image/png;base64,{image}'/></body></html>"
    )
    Path(html_path).write_text(page)
    (out_dir / "report.md").write_text(markdown)
    (out_dir / "report.html").write_text(page)
    (out_dir / "students.json").write_text(json.dumps(summaries, indent=1))
    tracker = Tracker(info.tracking_uri)
    best = max(summaries, key=lambda r: r["val_task"])
    champion = tracker.promote_champion(info.benchmark, best["run_id"], best["val_task"])
    tracker.log_parent_artifacts(info.parent_run_id, [out_dir / "report.md", out_dir / "report.html", plot,
                                                      out_dir / "students.json"])
    tracker.finish_parent(info.parent_run_id, metrics={
        f"test_accuracy_{stat}_{m}": float(table.loc[m, f"test_accuracy_{stat}"]) for m in table.index
        for stat in ("mean", "std")
    })
    publish(info, "report", out_dir)
    log.info("report:\n%s", markdown)
    return {"table": json.loads(table.to_json(orient="index")), "champion": champion, "best_run": best["run_id"],
            "markdown": markdown}
