"""The house's layers: a core that needs no extra, a library that never imports the pipeline layer,
extras that fail with one line, and no import cycle.

The core is imported in a fresh interpreter whose import system refuses every module of every
extra (:data:`ptdistill.extras.EXTRAS`: kfp, mlflow, transformers, datasets, accelerate, ...), as
after ``pip install ptdistill`` alone; the README's "In your own training loop" snippet runs there.
"""

from __future__ import annotations

import ast
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ptdistill.extras import EXTRAS

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("ptdistill", "pipelines", "components")
#: The core of docs/architecture.md: what `pip install ptdistill` alone must import.
CORE = ["ptdistill", "ptdistill.losses", "ptdistill.arrays", "ptdistill.checks", "ptdistill.metrics",
        "ptdistill.evaluation", "ptdistill.config", "ptdistill.io", "ptdistill.storage", "ptdistill.splits",
        "ptdistill.synthetic", "ptdistill.extras", "ptdistill.proxy", "ptdistill.proxy.criteria",
        "ptdistill.proxy.search", "ptdistill.proxy.solver", "ptdistill.proxy.plot", "ptdistill.cli"]
BLOCKED = sorted({module for modules in EXTRAS.values() for module in modules}
                 | {"kfp", "mlflow", "transformers", "datasets", "accelerate"})

#: Prepended to every script run "without the extras": a finder that refuses the extras' modules
#: (and their submodules), exactly as if they were not installed.
BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Refuse())
"""


def python(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def readme_snippet() -> str:
    """The Python block under README's "In your own training loop"."""
    section = (ROOT / "README.md").read_text().split("## In your own training loop", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow  # fresh interpreters importing torch
def test_the_core_and_the_readme_snippet_run_without_any_extra():
    script = BLOCKER + textwrap.dedent(f"""
        import importlib
        for name in {CORE!r}:
            importlib.import_module(name)
        leaked = sorted(b for b in {BLOCKED!r} if b in sys.modules)
        assert not leaked, leaked

    """) + readme_snippet() + textwrap.dedent("""
        import numpy as np  # the snippet runs verbatim above: it defines its own inputs
        assert isinstance(result.eps, np.ndarray) and result.eps.dtype == np.float64
        assert result.eps.shape == (3, result.order)
        assert loss.shape == () and torch.isfinite(loss)
        assert torch.isfinite(student_logits.grad).all()
        print("ok")
    """)
    proc = python(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


@pytest.mark.slow  # fresh interpreters importing torch
def test_a_part_without_its_extra_fails_with_one_line_naming_it():
    script = BLOCKER + textwrap.dedent("""
        from ptdistill.extras import MissingExtra
        for name in ("ptdistill.families.text.backend", "ptdistill.tracking", "pipelines.local", "components"):
            try:
                __import__(name)
            except MissingExtra as err:
                print(err)
            else:
                raise AssertionError(name + " imported without its extra")
        # The text family's modules import (the configs need their classes); using them names the extra.
        from ptdistill.families.text import data, models, trainer
        from ptdistill.families.text.models import HFModelSpec
        for use in (lambda: models.load_tokenizer(HFModelSpec(name_or_path="x")),
                    lambda: data.load_task("sst2"), lambda: trainer._accelerator(None)):
            try:
                use()
            except MissingExtra as err:
                print(err)
            else:
                raise AssertionError("a text function ran without the extra")
    """)
    proc = python(script)
    assert proc.returncode == 0, proc.stderr
    text_line = ("ptdistill.families.text needs the 'text' extra (missing transformers, datasets, accelerate,"
                 " safetensors): pip install 'ptdistill[text]'")
    assert proc.stdout.splitlines()[4:] == [text_line] * 3
    assert proc.stdout.splitlines()[:4] == [
        text_line,
        *(f"{name} needs the 'pipelines' extra (missing kfp, mlflow, google.cloud.storage, filelock, psutil, scipy):"
          " pip install 'ptdistill[pipelines]'" for name in ("ptdistill.tracking", "pipelines.local", "components")),
    ]


@pytest.mark.slow  # fresh interpreters importing torch
def test_the_cli_without_the_pipelines_extra_lists_its_commands_and_names_the_extra(tmp_path):
    cli = BLOCKER + "from ptdistill.cli import main\nsys.argv[0] = 'ptdistill'\nraise SystemExit(main(sys.argv[1:]))\n"
    help_ = python(cli, "--help")
    assert help_.returncode == 0, help_.stderr
    assert "{search,run,compile,benchmarks,compare,report,ui,submit,schedule}" in help_.stdout
    for command in (["run", "synthetic", "--quick", "--pipeline-root", str(tmp_path)], ["compare", "synthetic"]):
        proc = python(cli, *command)
        assert proc.returncode == 2
        assert proc.stderr.splitlines() == [
            f"ptdistill {command[0]}: error: pipelines.local needs the 'pipelines' extra (missing kfp, mlflow,"
            " google.cloud.storage, filelock, psutil, scipy): pip install 'ptdistill[pipelines]'"]
    assert not any(tmp_path.iterdir()), "a run without its extra wrote nothing"


# --------------------------------------------------------------------------- static import graph

def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the three layers."""
    found = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(node: ast.Import | ast.ImportFrom, name: str, known: dict[str, Path]) -> list[str]:
    """The project modules an import statement of module ``name`` loads (its own package's names too)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from . import x / from .a import x
        package = name if known[name].name == "__init__.py" else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}".rstrip(".")
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def top_level_imports(body: list[ast.stmt]):
    """Import statements executed when the module is imported (not in functions, classes' methods or
    ``if TYPE_CHECKING:`` blocks)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            yield from top_level_imports(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from top_level_imports(node.body + node.orelse + node.finalbody
                                         + [s for h in node.handlers for s in h.body])
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from top_level_imports(node.body)


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges[name] = {target for node in top_level_imports(tree.body) for target in imported(node, name, known)
                       if target in known and target != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_module_top_imports():
    assert cycles(graph()) == []


def test_the_library_never_imports_the_pipeline_layer():
    offenders = []
    for name, path in modules().items():
        if not name.startswith("ptdistill"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):  # function-local imports too
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                offenders += [f"{name}: {t}" for t in targets if t.split(".")[0] in ("pipelines", "components")]
    assert offenders == []


@pytest.mark.slow  # fresh interpreters importing torch
@pytest.mark.parametrize("seed", [0, 1])
def test_every_module_imports_in_a_random_order(seed):
    order = sorted(name for name in modules() if not name.endswith("__main__"))  # those run the CLI
    random.Random(seed).shuffle(order)
    proc = python("import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n", *order)
    assert proc.returncode == 0, f"order (seed {seed}): {order}\n{proc.stderr[-3000:]}"


@pytest.mark.slow  # fresh interpreters importing torch
def test_text_data_without_the_text_extra_fails_with_one_line_naming_it():
    script = BLOCKER.replace(repr(BLOCKED), repr(list(EXTRAS["text"]))) + textwrap.dedent("""
        from ptdistill.experiments import default_config
        from ptdistill.extras import MissingExtra
        from ptdistill.steps.data import build_splits
        try:
            build_splits(default_config("rotten-tomatoes", quick=True))
        except MissingExtra as err:
            print(err)
    """)
    proc = python(script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "ptdistill.families.text needs the 'text' extra (missing transformers, datasets, accelerate, safetensors):"
        " pip install 'ptdistill[text]'"]
