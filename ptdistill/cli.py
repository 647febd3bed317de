"""The ``ptdistill`` command line: ``ptdistill search`` here, more commands from other layers.

A layer adds commands through the ``ptdistill.commands`` entry-point group: each entry names a
function ``add_commands(subparsers)`` (the pipeline layer registers ``pipelines.cli:add_commands``
in ``pyproject.toml``). The library itself imports no layer above it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import torch

import ptdistill
from ptdistill.checks import check_labels, check_probs, finite_real
from ptdistill.engine import resolve_device
from ptdistill.extras import MissingExtra
from ptdistill.io import load_labels, load_teacher_probs, write_json_atomic
from ptdistill.proxy import CRITERIA, STRATEGIES, proxy_teacher, search
from ptdistill.proxy.plot import plot_proxy
from ptdistill.storage import check_location, local_copy
from ptdistill.synthetic import noisy_teacher

#: Entry-point group of the functions that add subcommands (see the module docstring).
COMMANDS_GROUP = "ptdistill.commands"


def _synthetic_size(text: str) -> tuple[int, int]:
    try:
        n, c = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NxC such as 1000x3, got {text!r}") from None
    if n < 1 or c < 2:
        raise argparse.ArgumentTypeError(f"expected N >= 1 and C >= 2, got {text!r}")
    return n, c


def _finite(text: str) -> float:
    """An argparse type: ``text`` as a finite float (:func:`ptdistill.checks.finite_real`)."""
    try:
        return finite_real("value", float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None


def _check_out(out: Path) -> None:
    """Raise ValueError unless the result JSON and its plot (``out`` with ``.png``) can be written,
    so that a bad ``--out`` fails before the search runs: its folder is made (as the write would)
    and a probe file is created and removed in it."""
    for path in (out, out.with_suffix(".png")):
        if path.is_dir():
            raise ValueError(f"--out {path}: is a directory; expected a file path such as {path / 'search.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".ptdistill-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"--out {out}: cannot be written ({err.strerror or err}: {err.filename or out.parent})") from None


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search PTLoss coefficients by the proxy teacher on labeled validation data",
        description="Search PTLoss coefficients: solve the proxy teacher of every candidate on the "
        "validation set, score it, keep the best. Writes eps, order, score and the candidate "
        "table as JSON, and a teacher-vs-proxy plot next to it.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher-probs", help="teacher probabilities: .npy (N, C), CSV or parquet; a path or gs:// URI")
    src.add_argument("--synthetic", type=_synthetic_size, metavar="NxC",
                     help="use a synthetic over-confident teacher of N examples and C classes instead")
    p.add_argument("--labels", help="labels file (.npy, CSV or parquet); a path or gs:// URI")
    p.add_argument("--labels-column", help="labels column (in --labels, else in --teacher-probs)")
    p.add_argument("--prob-columns", help="comma-separated probability columns of a CSV/parquet teacher file")
    p.add_argument("--max-order", type=int, default=5,
                   help="try PTLoss orders 1..M (default %(default)s; docs/method.md §6.1)")
    p.add_argument("--trials", type=int, default=100, help="random coefficient sets per order (default %(default)s)")
    p.add_argument("--low", type=_finite, default=-1.0, help="lowest coefficient drawn (finite, below --high)")
    p.add_argument("--high", type=_finite, default=10.0, help="highest coefficient drawn (finite)")
    p.add_argument("--strategy", choices=sorted(STRATEGIES), default="random",
                   help="random: the paper's Algorithm 1; implicit: then gradient refinement (default %(default)s)")
    p.add_argument("--criterion", choices=sorted(CRITERIA), default="q",
                   help="score of a proxy teacher on validation, lower is better (default %(default)s; §5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the coefficient draws (default %(default)s)")
    p.add_argument("--max-flips", type=float, default=0.5,
                   help="choose no coefficients whose proxy overturns more than this share of the teacher's decisions")
    p.add_argument("--device", default="cpu", help="torch device for the solver: cpu, cuda, cuda:1 or auto (default cpu)")
    p.add_argument("--out", type=Path, required=True, help="result JSON path; the plot goes beside it as .png")
    p.set_defaults(run=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    """Run the search; the input checks' notes (such as rows renormalised) go to stderr as one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ptdistill search: note: %(message)s"))
    checks_log = logging.getLogger("ptdistill.checks")
    checks_log.addHandler(handler)
    propagate, checks_log.propagate = checks_log.propagate, False
    try:
        return _search(args)
    finally:
        checks_log.removeHandler(handler)
        checks_log.propagate = propagate


def _search(args: argparse.Namespace) -> int:
    if not args.low < args.high:
        raise ValueError(f"--low/--high: expected --low below --high, got {args.low} and {args.high}")
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise ValueError(f"--device: {str(err).removeprefix('device: ')}") from None
    for location in filter(None, (args.teacher_probs, args.labels)):
        check_location(location)
    _check_out(args.out)
    if args.synthetic:
        teacher, labels = noisy_teacher(*args.synthetic, seed=args.seed)
    else:
        in_file = args.labels_column if args.labels is None else None
        prob_columns = args.prob_columns.split(",") if args.prob_columns else None
        with local_copy(args.teacher_probs) as path:
            teacher, labels = load_teacher_probs(path, labels_column=in_file, prob_columns=prob_columns)
        if args.labels is not None:
            with local_copy(args.labels) as path:
                labels = load_labels(path, args.labels_column)
        if labels is None:
            raise ValueError("labels: pass --labels FILE or --labels-column NAME (a column of --teacher-probs)")
        check_probs(f"--teacher-probs {args.teacher_probs}", teacher)
        check_labels(f"labels ({args.labels or args.teacher_probs})", labels, *teacher.shape)
    teacher, labels = teacher.to(device), labels.to(device)
    with warnings.catch_warnings():  # printed below as one line each, without Python's source-line echo
        warnings.simplefilter("ignore", UserWarning)
        result = search(teacher, labels, max_order=args.max_order, trials=args.trials, low=args.low, high=args.high,
                        seed=args.seed, strategy=args.strategy, criterion=args.criterion, max_flips=args.max_flips,
                        progress=True)
    for note in result.warnings:
        print(f"warning: {note}", file=sys.stderr)
    plot = plot_proxy(teacher, proxy_teacher(teacher, torch.from_numpy(result.eps).to(teacher.device)), labels,
                      args.out.with_suffix(".png"),
                      title=f"{args.strategy} search: order {result.order}, {args.criterion} {result.score:.4g}")
    payload = result.to_dict()
    payload["plot"] = plot.name
    write_json_atomic(args.out, payload)
    print(f"best order {result.order}, {args.criterion} = {result.score:.6g} "
          f"({len(result.table)} candidates in {result.seconds:.1f} s); the proxy overturns {result.flips:.4f} of the"
          " teacher's decisions")
    print(f"eps = {result.eps.round(4).tolist()}")
    print(f"wrote {args.out} and {plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="ptdistill", description=ptdistill.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_search(sub)
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; bad input, and a command whose extra is missing, exit 2
    with a one-line message."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, MissingExtra) as err:
        print(f"ptdistill {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a pipeline run (which handles it itself)
        print(f"ptdistill {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m ptdistill.cli, as python -m ptdistill
    raise SystemExit(main())
