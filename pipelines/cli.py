"""``ptdistill run | compile | benchmarks | compare | report | ui | submit | schedule``: the pipeline
side of the command line.

``ptdistill.cli`` adds these commands through the ``ptdistill.commands`` entry-point group
(``pyproject.toml`` registers :func:`add_commands`); the library never imports this layer. The
modules that need the ``pipelines`` extra (kfp, mlflow, ...) are imported inside the commands, so
``ptdistill --help`` lists them without the extra, and a command run without it fails with one
line naming the extra (:class:`ptdistill.extras.MissingExtra`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from ptdistill import defaults
from ptdistill.engine import autocast_dtype, resolve_device
from ptdistill.experiments import BENCHMARKS, ExperimentConfig, build_config, config_class
from ptdistill.hints import ptdistill_command
from ptdistill.teacher_outputs import check_before_run


def _config(args: argparse.Namespace, read_data: bool = False) -> ExperimentConfig:
    """The benchmark's config under its recipe with ``--config`` and ``--set`` applied
    (:func:`~ptdistill.experiments.build_config`), checked (:func:`_check_inputs`)."""
    config = build_config(args.benchmark, args.set or [], args.config, quick=getattr(args, "quick", False))
    _check_inputs(config, read_data)
    return config


def _check_inputs(config: ExperimentConfig, read_data: bool) -> None:
    """Fail on a bad config before a pipeline starts (and before anything is written).

    compile, submit and schedule (``read_data`` false) check the config alone and read no data:
    the data may be huge, in a bucket or on the cluster only; prepare_data checks it there, with
    the same errors. ``ptdistill run`` also reads the data up front when it is local (``gs://``
    data is read by prepare_data, which runs on this machine too).
    """
    # the pipeline steps (they record to MLflow): pipelines extra, imported here as in the commands
    from ptdistill.steps.data import build_splits, check_config, remote_data

    if read_data and not remote_data(config):
        splits, class_names = build_splits(config)
        check_before_run(config.teacher, class_names, {name: split.ids for name, split in splits.items()})
    else:
        check_config(config)
        if read_data:  # gs:// data: a local teacher.outputs file can still be looked at now
            check_before_run(config.teacher)


def _training_settings(config: ExperimentConfig) -> list[tuple[str, object]]:
    """(config key, train settings) of every model the run trains: the teacher (unless it is given by
    its outputs or used as pretrained) and each method's students."""
    settings = [("teacher.train", config.teacher.train)] if config.trains_teacher() else []
    return settings + [(f"methods ({m.name}): student.train", config.student_train(m)) for m in config.methods]


def _check_precision_here(config: ExperimentConfig, containers: bool) -> None:
    """A local run trains on this machine (on its CPU in ``containers``, which get no GPU): a
    precision its device cannot run (``fp16`` off CUDA) is refused now, not minutes later in a
    task. A device this machine lacks is left to the task that would use it, which names it."""
    for key, settings in _training_settings(config):
        try:
            device = torch.device("cpu") if containers and settings.device == "auto" else resolve_device(settings.device)
        except ValueError:
            continue
        try:
            autocast_dtype(settings.precision, device)
        except ValueError as err:
            raise ValueError(f"{key}.{err}") from None


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("benchmark", help=f"one of: {', '.join(BENCHMARKS)}")
    p.add_argument("--config", type=Path, help="YAML file overriding the benchmark's defaults")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one key, e.g. student.train.epochs=20, or recipe=best (teacher and students"
                        " chosen on validation NLL; recipe=paper: the paper's fixed epochs)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one seed, ptloss and kl (a smoke run)")


def _run(args: argparse.Namespace) -> int:
    # pipelines extra, imported here so that `ptdistill --help` works without it (and before any data is read)
    from pipelines.local import default_tracking_uri, run_local
    from pipelines.signals import RunInterrupted
    from ptdistill.tracking import Tracker, experiment_name

    config = _config(args, read_data=True)
    _check_precision_here(config, containers=args.runner == "docker")
    tracking_uri = args.tracking_uri or default_tracking_uri(args.runner, args.pipeline_root)
    print(f"ptdistill run {config.benchmark}: {len(config.runs())} students "
          f"({', '.join(m.name for m in config.methods)} x seeds {config.seeds}) via kfp.local "
          f"({args.runner} runner)", flush=True)
    try:
        result = run_local(config, pipeline_root=args.pipeline_root, artifact_store=args.artifact_store,
                           tracking_uri=tracking_uri, run_name=args.run_name, verbose=args.verbose,
                           runner=args.runner)
    except RunInterrupted as err:  # SIGINT / SIGTERM / SIGHUP: tasks ended, then cleaned up like a failure
        print(f"ptdistill run {config.benchmark}: {err}; {_clean_up_note(err)}", file=sys.stderr)
        return err.exit_code
    except RuntimeError as err:  # kfp.local: a task failed; its log is printed above
        print(f"ptdistill run {config.benchmark}: failed: {err}", file=sys.stderr)
        print(_clean_up_note(err), file=sys.stderr)
        return 1
    print()
    print(result.markdown)
    experiment = Tracker(tracking_uri).experiment_id(config.benchmark)
    print(f"finished {result.run_name} in {result.seconds:.0f} s; report: {result.report_uri}")
    print(f"MLflow: experiment {experiment_name(config.benchmark)!r} (id {experiment}) in {tracking_uri}; "
          f"run `{ptdistill_command('ui', tracking_uri=_named_uri(tracking_uri))}` and open /#/experiments/{experiment}/runs")
    return 0


def _named_uri(tracking_uri: str) -> str | None:
    """``tracking_uri`` unless it is what ``ptdistill ui`` opens by default (the subprocess runner's default)."""
    # pipelines extra, imported here so that `ptdistill --help` works without it
    from pipelines.local import default_tracking_uri

    return None if tracking_uri == default_tracking_uri() else tracking_uri


def _clean_up_note(err: BaseException) -> str:
    """The line run_local's clean-up added to ``err``: what was cleaned, what is left to do by hand."""
    return next((n for n in getattr(err, "__notes__", []) if n.startswith("clean-up:")), "clean-up: not reached")


def _compile(args: argparse.Namespace) -> int:
    # pipelines extra, imported here so that `ptdistill --help` works without it
    from pipelines.dag import compile_pipeline

    path = compile_pipeline(_config(args), args.output)
    print(f"wrote {path}")
    return 0


def _benchmarks(args: argparse.Namespace) -> int:
    for name in BENCHMARKS:
        print(name)
    print()
    for name, (_, description, _) in BENCHMARKS.items():
        print(f"{name:16s} {description}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    # pipelines extra, imported here so that `ptdistill --help` works without it
    from pipelines.local import default_tracking_uri
    from ptdistill.tracking import Tracker

    config_class(args.benchmark)
    frame = Tracker(args.tracking_uri or default_tracking_uri()).latest_students(args.benchmark, n_parents=args.last)
    if frame.empty:
        print(f"no finished {args.benchmark} runs in MLflow yet: run "
              f"`{ptdistill_command('run', args.benchmark, tracking_uri=args.tracking_uri)}` first")
        return 1
    keep = ["parent_run_name", "method", "seed", "test_accuracy", "test_nll", "test_ece", "test_task",
            "test_l2_to_pstar", "val_task"]
    print(frame[[c for c in keep if c in frame.columns]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _pair(text: str) -> tuple[str, str]:
    parts = text.split(",")
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected two method names as A,B, got {text!r}")
    return parts[0], parts[1]


def _report(args: argparse.Namespace) -> int:
    # pipelines extra, imported here so that `ptdistill --help` works without it
    from pipelines.local import default_tracking_uri
    from ptdistill.results import benchmark_report
    from ptdistill.tracking import Tracker

    for benchmark in args.benchmarks:
        config_class(benchmark)
    tracker = Tracker(args.tracking_uri or default_tracking_uri())
    args.out.mkdir(parents=True, exist_ok=True)
    for benchmark in args.benchmarks:
        path = benchmark_report(tracker, benchmark, args.out, run_names=args.runs, baseline=args.baseline,
                                pairs=args.pairs)
        print(f"wrote {path}")
    return 0


def _ui(args: argparse.Namespace) -> int:
    # pipelines extra, imported here so that `ptdistill --help` works without it
    from pipelines.local import default_tracking_uri
    from ptdistill.servers import run_server
    from ptdistill.tracking import Tracker

    uri = args.tracking_uri or default_tracking_uri()
    # mlflow server creates a sqlite schema itself, without ptdistill's store lock: build (or check)
    # it here first, under the lock, so a run starting at the same moment cannot race it.
    Tracker(uri)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port), "--workers", str(args.workers)]
    if args.artifacts_destination:
        cmd += ["--artifacts-destination", args.artifacts_destination]
    print(f"MLflow UI at http://127.0.0.1:{args.port} (experiments at /#/experiments/<id>/runs); Ctrl-C stops it",
          flush=True)
    # Ctrl-C, SIGTERM or SIGHUP stops the server's whole process tree (workers, job runner); exit 130 / 143 / 129.
    return run_server(cmd, {**os.environ, "MLFLOW_TRACKING_URI": uri})


_SCHEDULE_ACTIONS = ("list", "pause", "resume", "delete")


def _add_remote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="Kubeflow Pipelines API URL (default $KFP_HOST, else \"endpoint\" in "
                   "~/.config/kfp/context.json)")
    p.add_argument("--token", help="bearer token for the API (default $KFP_TOKEN)")
    p.add_argument("--namespace", help="Kubernetes namespace of a multi-user installation (default $KFP_NAMESPACE)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", help="KFP experiment (default ptdistill-BENCHMARK)")
    p.add_argument("--pipeline-root", help="where KFP keeps outputs, e.g. gs://bucket/pipeline-root "
                   "(default: the installation's)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI the pods use (default $MLFLOW_TRACKING_URI)")
    p.add_argument("--artifact-store", help="components' outputs and teacher cache, e.g. gs://bucket/ptdistill "
                   "(default: --pipeline-root)")
    p.add_argument("--no-cache", action="store_true", help="disable KFP step caching for this run")


def _add_vertex_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vertex", action="store_true", help="target Vertex AI Pipelines instead of a KFP host "
                   "(needs ptdistill[vertex] and --pipeline-root gs://...)")
    p.add_argument("--project", help="Vertex AI: Google Cloud project (default $GOOGLE_CLOUD_PROJECT)")
    p.add_argument("--region", help="Vertex AI: region, e.g. us-central1 (default $GOOGLE_CLOUD_REGION)")
    p.add_argument("--service-account", help="Vertex AI: service account the pipeline runs as")


def _vertex_args(args: argparse.Namespace) -> dict:
    return dict(project=args.project, region=args.region, pipeline_root=args.pipeline_root,
                tracking_uri=args.tracking_uri, artifact_store=args.artifact_store,
                enable_caching=not args.no_cache, service_account=args.service_account)


def _remote_config(args: argparse.Namespace) -> ExperimentConfig:
    # pipelines extra, imported here so that `ptdistill --help` works without it
    from pipelines.remote import resolve_host

    config = _config(args)
    args.host = resolve_host(args.host)
    return config


def _submit(args: argparse.Namespace) -> int:
    # pipelines extra, imported here so that `ptdistill --help` works without it
    from pipelines.remote import run_url, submit

    if args.vertex:
        from pipelines.remote import vertex_submit  # pipelines extra, as above

        job = vertex_submit(_config(args), run_name=args.run_name, wait=args.wait, **_vertex_args(args))
        print(f"run id: {job.resource_name}")
        print(f"url: {job._dashboard_uri()}")
        if args.wait:
            print(f"run finished: {job.state.name}")
            return 0 if job.state.name == "PIPELINE_STATE_SUCCEEDED" else 1
        return 0
    config = _remote_config(args)
    run = submit(config, host=args.host, experiment=args.experiment, run_name=args.run_name,
                 pipeline_root=args.pipeline_root, tracking_uri=args.tracking_uri,
                 artifact_store=args.artifact_store, enable_caching=not args.no_cache,
                 existing_token=args.token, namespace=args.namespace)
    print(f"submitted {config.benchmark}: run {run.run_id} ({run.display_name})")
    print(f"run id: {run.run_id}")
    print(f"url: {run_url(args.host, run.run_id)}", flush=True)
    if not args.wait:
        return 0
    from pipelines.remote import client, follow, run_state  # pipelines extra, as above

    final = follow(client(args.host, args.token, args.namespace), run.run_id, host=args.host,
                   poll_seconds=args.poll_seconds)
    state = run_state(final)
    print(f"run {run.run_id} finished: {state}")
    return 0 if state == "SUCCEEDED" else 1


def _schedule(args: argparse.Namespace) -> int:
    # pipelines extra, imported here so that `ptdistill --help` works without it
    from pipelines import remote

    target = args.target
    if target in _SCHEDULE_ACTIONS:
        if args.vertex:
            raise ValueError(f"schedule {target} --vertex: manage Vertex AI schedules in the console or with "
                             "`gcloud ai schedules`")
        if target == "list":
            rows = remote.list_schedules(args.host, args.token, args.namespace)
            if not rows:
                print("no recurring runs")
            for r in rows:
                trigger = getattr(r, "trigger", None)
                cron = getattr(getattr(trigger, "cron_schedule", None), "cron", None)
                every = getattr(getattr(trigger, "periodic_schedule", None), "interval_second", None)
                when = f"cron {cron!r}" if cron else (f"every {every} s" if every else "-")
                print(f"{r.recurring_run_id}  {r.display_name}  {r.status or r.mode or '-'}  {when}  "
                      f"max_concurrency={r.max_concurrency}")
            return 0
        getattr(remote, target)(args.id, args.host, args.token, args.namespace)
        print(f"{ {'pause': 'paused', 'resume': 'resumed', 'delete': 'deleted'}[target]} recurring run {args.id}")
        return 0
    if args.id is not None:
        raise ValueError(f"unexpected argument {args.id!r} after benchmark {target!r}")
    if not args.cron:
        raise ValueError("--cron is required to create a schedule, e.g. --cron \"0 0 3 * * *\" (03:00 daily)")
    args.benchmark = target
    remote.validate_cron(args.cron)
    if args.vertex:
        remote.vertex_cron(args.cron)
        sched = remote.vertex_schedule(_config(args), cron=args.cron, max_concurrency=args.max_concurrency,
                                       name=args.name, **_vertex_args(args))
        print(f"schedule id: {sched.resource_name}")
        print(f"url: {sched._dashboard_uri()}")
        return 0
    config = _remote_config(args)
    rr = remote.schedule(config, host=args.host, cron=args.cron, max_concurrency=args.max_concurrency,
                         no_catchup=args.no_catchup, experiment=args.experiment, name=args.name,
                         pipeline_root=args.pipeline_root, tracking_uri=args.tracking_uri,
                         artifact_store=args.artifact_store, enable_caching=not args.no_cache,
                         existing_token=args.token, namespace=args.namespace)
    print(f"scheduled {config.benchmark}: recurring run {rr.recurring_run_id} ({rr.display_name}) "
          f"on cron {args.cron!r}, max concurrency {args.max_concurrency}")
    print(f"recurring run id: {rr.recurring_run_id}")
    print(f"url: {remote.schedule_url(args.host, rr.recurring_run_id)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register run, compile, benchmarks, compare, report, ui, submit and schedule on ``sub`` (the
    subparsers of ``ptdistill``'s parser): the ``ptdistill.commands`` entry point of this layer."""
    p = sub.add_parser("run", help="run a benchmark pipeline locally (kfp.local) and print its results")
    _add_config_args(p)
    p.add_argument("--pipeline-root", default=defaults.PIPELINE_ROOT,
                   help=f"local folder for KFP outputs (default ./{defaults.PIPELINE_ROOT})")
    p.add_argument("--artifact-store", help="where components publish outputs and the teacher cache "
                   "(a folder, file:// or gs://bucket/prefix; default: the pipeline root)")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI (default ${defaults.TRACKING_URI_ENV} or {defaults.TRACKING_URI}; "
                   f"with --runner docker, {defaults.TRACKING_DB} in the pipeline root)")
    p.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess",
                   help="subprocess: each task a process on this Python (default); docker: each task in its container "
                   "image, as on a cluster (needs a Docker daemon and the images, see README 'Run in containers')")
    p.add_argument("--run-name", help="name of the run in MLflow and the artifact store (default <benchmark>-<time>-<random>),"
                   " e.g. to select it later with `ptdistill report --run`")
    p.add_argument("-v", "--verbose", action="store_true", help="stream every task's full log (kfp.local's executor "
                   "input and output too) instead of a line per task; the logs are in <pipeline-root>/logs either way")
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

    p = sub.add_parser("report", help="Markdown results (tables, paired differences, plots) from MLflow")
    p.add_argument("benchmarks", nargs="+", metavar="BENCHMARK")
    p.add_argument("--out", type=Path, required=True, help="folder for <benchmark>.md and its PNGs")
    p.add_argument("--run", action="append", dest="runs", metavar="NAME",
                   help="a pipeline run to include (repeatable; default: each benchmark's latest run)")
    p.add_argument("--baseline", default="kl", help="method the paired differences are taken to (default kl)")
    p.add_argument("--pair", action="append", dest="pairs", type=_pair, metavar="A,B",
                   help="also compare method A with method B, paired by seed (repeatable), e.g. searched_o3,random_o3")
    p.add_argument("--tracking-uri")
    p.set_defaults(run=_report)

    p = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 (Ctrl-C or SIGTERM stops the server and all its "
                       "processes; exit code 130 or 143)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--tracking-uri")
    p.add_argument("--artifacts-destination", help="artifact root for runs created through the server")
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers (MLflow's default of 4 starts slowly)")
    p.set_defaults(run=_ui)


    p = sub.add_parser("submit", help="submit a benchmark's pipeline run to Kubeflow Pipelines")
    _add_config_args(p)
    _add_remote_args(p)
    _add_run_args(p)
    _add_vertex_args(p)
    p.add_argument("--run-name", help="run name in KFP and MLflow (default BENCHMARK-YYYYmmdd-HHMMSS-<8 hex digits>)")
    p.add_argument("--wait", action="store_true", help="follow the run until it ends (exit 1 unless it succeeds)")
    p.add_argument("--poll-seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    p.set_defaults(run=_submit)

    p = sub.add_parser(
        "schedule", help="recurring re-distillation on Kubeflow Pipelines: create, list, pause, resume, delete",
        description="`ptdistill schedule BENCHMARK --cron \"0 0 3 * * *\"` creates a recurring run (KFP's "
        "6-field cron, seconds first); `ptdistill schedule list|pause ID|resume ID|delete ID` manage them.")
    p.add_argument("target", metavar="BENCHMARK|list|pause|resume|delete")
    p.add_argument("id", nargs="?", metavar="ID", help="recurring run id (pause, resume, delete)")
    p.add_argument("--config", type=Path, help="YAML file overriding the benchmark's defaults")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one key")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one seed, ptloss and kl")
    _add_remote_args(p)
    _add_run_args(p)
    p.add_argument("--cron", help="6-field cron, e.g. \"0 0 3 * * *\" for 03:00 daily")
    p.add_argument("--max-concurrency", type=int, default=1)
    p.add_argument("--no-catchup", action="store_true", help="after a pause run only the latest missed interval")
    p.add_argument("--name", help="recurring run name (default ptdistill-BENCHMARK-schedule)")
    _add_vertex_args(p)
    p.set_defaults(run=_schedule)
