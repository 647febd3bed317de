"""``scripts/reproduce.sh`` (docs/results.md's experiments) stays runnable: every ``run`` line parses
with ``ptdistill run``'s parser, its config and ``--set`` overrides load and validate, and every
``report`` line names runs that a ``run`` line creates."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ptdistill.cli import build_parser
from pipelines.cli import _config
from ptdistill.experiments import apply_recipe, default_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = (ROOT / "scripts" / "reproduce.sh").read_text().replace("\\\n", " ")  # joined continuation lines
#: The script's loop variables, as each loop sets them.
LOOPS = {"epochs": ["2", "5", "10", "25", "100"], "criterion": ["q", "brier", "nll"], "table": ["fair", "anes96"],
         "tseed": ["0", "1"], "teacher_select": ["nll", "accuracy"], "recipe": ["paper", "best"]}


def _expand(line: str) -> list[str]:
    """A script line with ``$EXP`` resolved and one copy per combination of the loop variables it uses."""
    lines = [line.replace('"$EXP', f'"{ROOT}/docs/experiments').replace("$OUT", "docs/results")]
    for name, values in LOOPS.items():
        if f"${name}" in lines[0]:
            lines = [one.replace(f"${name}", value) for one in lines for value in values]
    return lines


def _printf(line: str) -> str:
    """Bash's ``$(printf -- "FORMAT" ARGS...)`` as the script uses it, expanded in place."""
    def expand(match: re.Match) -> str:
        fmt, *args = shlex.split(match.group(1))
        per = fmt.count("%s")
        return " ".join(fmt.replace("%s", "{}").format(*args[i:i + per]).strip() for i in range(0, len(args), per))
    return re.sub(r'\$\(printf -- (.*?)\)', expand, line)


RUNS = [shlex.split(line.strip().removeprefix("run ")) for raw in SCRIPT.splitlines()
        if raw.strip().startswith("run ") for line in _expand(raw)]
REPORTS = [shlex.split(_printf(line).split('"$PTD" ', 1)[1]) for raw in SCRIPT.splitlines()
           if raw.startswith('"$PTD" report') for line in _expand(raw)]


def test_the_script_runs_every_experiment_config():
    used = {Path(a).name for run in RUNS for a in run if a.endswith(".yaml")}
    assert used == {p.name for p in (ROOT / "docs" / "experiments").glob("*.yaml")}
    # 4 single runs, 5 teachers, implicit, 3 criteria; 8a: 2 teachers x 3 selections, 8b: 2, 8c: 2 tables x 2 recipes
    assert len(RUNS) == 25 and len(REPORTS) == 12
    assert [len(build_parser().parse_args(a).pairs or []) for a in REPORTS] == [0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 3, 3]


@pytest.mark.parametrize("argv", RUNS, ids=[a[a.index("--run-name") + 1] for a in RUNS])
def test_run_lines_load_and_validate(argv):
    args = build_parser().parse_args(["run", *argv])
    config = _config(args)  # loads the YAML and --set strictly, builds the splits, validates
    assert config.benchmark == args.benchmark and config.methods and config.seeds
    assert len(config.runs()) == len(config.methods) * len(config.seeds)
    # the teacher is the benchmark's under the recipe the run chose, unless the line sets its training
    teacher = apply_recipe(default_config(args.benchmark), config.recipe).teacher
    assert config.teacher == teacher or "--set teacher.train." in " ".join(argv)


def test_report_lines_name_runs_the_script_makes():
    made = {a[a.index("--run-name") + 1]: a for a in RUNS}
    for argv in REPORTS:
        args = build_parser().parse_args(argv)
        assert args.runs and set(args.runs) <= set(made), args.runs
        assert {made[r][0] for r in args.runs} == set(args.benchmarks)
        if args.pairs:
            # a report of several runs names its methods <run>:<method> (ptdistill.results.benchmark_report)
            methods = {m.name if len(args.runs) == 1 else f"{r}:{m.name}" for r in args.runs
                       for m in _config(build_parser().parse_args(["run", *made[r]])).methods}
            for a, b in args.pairs:
                assert {a, b} <= methods
