"""``ptdistill run | compile | benchmarks | compare | ui``: the pipeline side of the command line.

kfp and the ``pipelines`` package are imported inside the commands, so the library and
``ptdistill search`` work without them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ptdistill.config import load_config
from ptdistill.experiments import BENCHMARKS, ExperimentConfig, config_class


def _config(args: argparse.Namespace) -> ExperimentConfig:
    cls = config_class(args.benchmark)
    base = cls.quick() if getattr(args, "quick", False) else cls()
    config = load_config(cls, args.config, args.set or [], base=base)
    _check_inputs(config)
    return config


def _check_inputs(config: ExperimentConfig) -> None:
    """Fail on bad data before a pipeline starts (and before anything is written)."""
    from ptdistill.steps.data import build_splits

    _, class_names = build_splits(config)
    config.validate(len(class_names))


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("benchmark", help=f"one of: {', '.join(BENCHMARKS)}")
    p.add_argument("--config", type=Path, help="YAML file overriding the benchmark's defaults")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one key, e.g. student.train.epochs=20")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one seed, ptloss and kl (a smoke run)")


def _run(args: argparse.Namespace) -> int:
    config = _config(args)
    from pipelines.local import default_tracking_uri, run_local
    from ptdistill.tracking import Tracker, experiment_name

    tracking_uri = args.tracking_uri or default_tracking_uri()
    print(f"ptdistill run {config.benchmark}: {len(config.runs())} students "
          f"({', '.join(m.name for m in config.methods)} x seeds {config.seeds}) via kfp.local", flush=True)
    try:
        result = run_local(config, pipeline_root=args.pipeline_root, artifact_store=args.artifact_store,
                           tracking_uri=tracking_uri)
    except RuntimeError as err:  # kfp.local: a task failed; its log is printed above
        print(f"ptdistill run {config.benchmark}: failed: {err}", file=sys.stderr)
        print("The MLflow parent run is marked FAILED and this run's objects were removed from the artifact store.",
              file=sys.stderr)
        return 1
    print()
    print(result.markdown)
    experiment = Tracker(tracking_uri).experiment_id(config.benchmark)
    print(f"finished {result.run_name} in {result.seconds:.0f} s")
    print(f"MLflow: experiment {experiment_name(config.benchmark)!r} (id {experiment}) in {tracking_uri}; "
          f"run `ptdistill ui` and open /#/experiments/{experiment}/runs")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from pipelines.dag import compile_pipeline

    path = compile_pipeline(_config(args), args.output)
    print(f"wrote {path}")
    return 0


def _benchmarks(args: argparse.Namespace) -> int:
    for name in BENCHMARKS:
        print(name)
    print()
    for name, (_, description) in BENCHMARKS.items():
        print(f"{name:12s} {description}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from pipelines.local import default_tracking_uri
    from ptdistill.tracking import Tracker

    config_class(args.benchmark)
    frame = Tracker(args.tracking_uri or default_tracking_uri()).latest_students(args.benchmark, n_parents=args.last)
    if frame.empty:
        print(f"no finished {args.benchmark} runs in MLflow yet: run `ptdistill run {args.benchmark}` first")
        return 1
    keep = ["parent_run_name", "method", "seed", "test_accuracy", "test_nll", "test_ece", "test_task",
            "test_l2_to_pstar", "val_task"]
    print(frame[[c for c in keep if c in frame.columns]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _ui(args: argparse.Namespace) -> int:
    from pipelines.local import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    if args.artifacts_destination:
        cmd += ["--artifacts-destination", args.artifacts_destination]
    print(f"MLflow UI at http://127.0.0.1:{args.port} (experiments at /#/experiments/<id>/runs); Ctrl-C stops it",
          flush=True)
    return subprocess.call(cmd, env={**os.environ, "MLFLOW_TRACKING_URI": uri})


def add_pipeline_commands(sub: argparse._SubParsersAction) -> None:
    """Register run, compile, benchmarks, compare and ui."""
    p = sub.add_parser("run", help="run a benchmark pipeline locally (kfp.local) and print its results")
    _add_config_args(p)
    p.add_argument("--pipeline-root", default="runs", help="local folder for KFP outputs (default ./runs)")
    p.add_argument("--artifact-store", help="where components publish outputs and the teacher cache "
                   "(a folder, file:// or gs://bucket/prefix; default: the pipeline root)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.set_defaults(run=_run)

    p = sub.add_parser("compile", help="compile a benchmark's pipeline to KFP IR YAML")
    _add_config_args(p)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.set_defaults(run=_compile)

    p = sub.add_parser("benchmarks", help="list the benchmarks (names first, then descriptions)")
    p.set_defaults(run=_benchmarks)

    p = sub.add_parser("compare", help="table of the latest runs' students from MLflow")
    p.add_argument("benchmark")
    p.add_argument("--last", type=int, default=1, help="how many latest pipeline runs")
    p.add_argument("--tracking-uri")
    p.set_defaults(run=_compare)

    p = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--tracking-uri")
    p.add_argument("--artifacts-destination", help="artifact root for runs created through the server")
    p.set_defaults(run=_ui)
