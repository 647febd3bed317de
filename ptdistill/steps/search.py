"""proxy_search: choose the PTLoss coefficients on the labeled validation split."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ptdistill.experiments import ExperimentConfig, SearchSpec
from ptdistill.families import backend_for
from ptdistill.io import write_json_atomic
from ptdistill.metrics import tvd
from ptdistill.proxy import proxy_teacher, search
from ptdistill.proxy.plot import plot_proxy
from ptdistill.steps.common import RunInfo, log, publish
from ptdistill.steps.teacher import read_teacher_output_probs
from ptdistill.tracking import Tracker


def proxy_search(config: ExperimentConfig, info: RunInfo, validation: Path, validation_probs: Path, out_dir: Path) -> dict:
    """Run the search; write ``result.json``, ``candidates.csv`` and ``proxy.png`` to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = backend_for(config).load_split(validation)
    teacher = torch.from_numpy(read_teacher_output_probs(validation_probs))
    labels = torch.tensor(split.labels)
    s = config.search
    with warnings.catch_warnings():  # logged below, and shown in the report
        warnings.simplefilter("ignore", UserWarning)
        result = search(teacher, labels, max_order=s.max_order, trials=s.trials, low=s.low, high=s.high,
                        seed=s.seed, strategy=s.strategy, criterion=s.criterion, max_flips=s.max_flips,
                        class_names=info.class_names, progress=True)
    proxy = proxy_teacher(teacher, torch.from_numpy(result.eps))
    summary = {
        "eps": result.eps.tolist(), "order": result.order, "score": result.score, "criterion": s.criterion,
        "strategy": s.strategy, "seconds": result.seconds,
        "teacher_tvd": tvd(teacher, labels), "proxy_tvd": tvd(proxy, labels),
        # Share of validation rows whose decision the chosen proxy teacher overturns, and what the report's
        # far-below rule (steps.report.flag_students) measures students against.
        "proxy_flips": result.flips,
        "teacher_accuracy": float((teacher.argmax(-1) == labels).double().mean()), "validation_rows": len(labels),
        "warnings": result.warnings,
    }
    if split.p_star is not None:
        p_star = torch.tensor(split.p_star)
        summary["teacher_l2_to_pstar"] = float(torch.linalg.vector_norm(teacher - p_star, dim=-1).mean())
        summary["proxy_l2_to_pstar"] = float(torch.linalg.vector_norm(proxy - p_star, dim=-1).mean())
    write_json_atomic(out_dir / "result.json", summary)
    result.table.assign(eps=result.table["eps"].map(json.dumps)).to_csv(out_dir / "candidates.csv", index=False)
    plot_proxy(teacher, proxy, labels, out_dir / "proxy.png",
               title=f"{info.benchmark}: {s.strategy} search, order {result.order}, {s.criterion} {result.score:.4g}")
    log.info("proxy search: order %d, %s %.5g, teacher TVD %.4f -> proxy TVD %.4f, flips %.4f of the teacher's"
             " validation decisions", result.order, s.criterion, result.score, summary["teacher_tvd"],
             summary["proxy_tvd"], result.flips)
    for note in result.warnings:
        log.warning("proxy search: %s", note)
    tracker = Tracker(info.tracking_uri)
    tracker.log_metrics(info.parent_run_id, {f"search_{k}": v for k, v in summary.items()
                                             if isinstance(v, float)} | {"search_order": result.order})
    tracker.log_parent_artifacts(info.parent_run_id, [out_dir / "result.json", out_dir / "candidates.csv",
                                                      out_dir / "proxy.png"])
    publish(info, "search", out_dir)
    return summary


def chosen_eps(search_dir: Path, settings: SearchSpec, choice: dict, num_classes: int) -> list[list[float]]:
    """PTLoss coefficients: the search's choice, or the one ``choice`` names.

    ``{}``: the best set of :func:`proxy_search`. ``{"order": m}``: the best searched set of order
    m. ``{"rank": k}`` (and optionally ``order``): the k-th best searched set by the criterion (0
    is the best). Like the search's own choice, these rank only the candidates within
    ``search.max_flips`` (all of them where none is). ``{"random_seed": s, "order": m}``: a set of
    order m drawn uniformly from the search's range [low, high] with seed s, scored by nothing
    (the paper's Fig. 4b baseline).
    """
    if "random_seed" in choice:
        rng = np.random.default_rng(choice["random_seed"])
        return rng.uniform(settings.low, settings.high, size=(num_classes, choice["order"])).tolist()
    result = json.loads((Path(search_dir) / "result.json").read_text())
    if not choice:
        return result["eps"]
    table = pd.read_csv(Path(search_dir) / "candidates.csv")
    if table["eligible"].any():  # as the search chose: only among candidates within max_flips, if any
        table = table[table["eligible"]]
    if "order" in choice:
        table = table[table["order"] == choice["order"]]
    ranked = table.sort_values(result["criterion"], kind="stable")
    rank = choice.get("rank", 0)
    if rank >= len(ranked):
        raise ValueError(f"{search_dir}: rank {rank} asked of {len(ranked)} searched coefficient sets"
                         f"{' of order ' + str(choice['order']) if 'order' in choice else ''}")
    return json.loads(ranked.iloc[rank]["eps"])
