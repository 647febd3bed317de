"""docs/method.md is the method's source inside the repository: every citation of it must name a
section it has, and nothing may cite the team's spec outside the repository instead."""

from __future__ import annotations

import ast
import functools
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
#: Text files that can cite a source (code, docs, configs, scripts, images).
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg", ".ini"}
#: A citation: ``docs/method.md §N`` (also ``[text](method.md) §N``), then more sections after
#: commas or "and": ``docs/method.md §7.3, §8``.
CITATION = re.compile(r"method\.md\)?((?:(?:\s*,\s*|\s+and\s+|\s*)§\s*\d+(?:\.\d+)*)+)")
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")
#: A heading of method.md that defines a section: ``## 2. PTLoss``, ``### 2.3 Gradient``.
HEADING = re.compile(r"^#{2,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
#: The old citation of the spec outside the repository (``SPEC``, ``SPEC's``, ``SPEC.md``, ``SPEC_SIZES``).
OLD_SPEC = re.compile(r"(?<![A-Za-z])SPEC(?![a-z])")
#: A section number in method.md that is the paper's (``KDD'24 §4.2``), not the page's own.
PAPER_SECTION = re.compile(r"KDD'24\s*$")
#: A dotted name of the package in method.md: ``ptdistill.proxy.solve_proxy``, ``ptdistill.losses``.
DOTTED = re.compile(r"\bptdistill(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def sections(text: str) -> set[str]:
    """Section numbers defined by the headings of a method.md text."""
    return set(HEADING.findall(text))


def cited_sections(text: str) -> list[str]:
    """Section numbers of every ``method.md §N`` citation in ``text``, in order."""
    return [n for group in CITATION.findall(text) for n in SECTION.findall(group)]


def own_sections(text: str) -> list[str]:
    """Section numbers that method.md's body cites bare (``§6.2``), leaving out the paper's (``KDD'24 §4.2``)."""
    body = HEADING.sub("", text)
    return [m.group(1) for m in SECTION.finditer(body)
            if not PAPER_SECTION.search(body[max(0, m.start() - 20):m.start()])]


@functools.cache
def repository_files() -> list[Path]:
    """Text files of the repository as git sees them: tracked, or untracked and not ignored (so no
    .venv, no run outputs under ``runs/``); not this test."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    paths = [ROOT / name for name in listed if name]
    return sorted(path for path in paths if path.is_file() and path != Path(__file__).resolve()
                  and (path.suffix in SUFFIXES or path.name.startswith("Dockerfile")))


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module of the package, or a name defined or imported at the top of one.

    Read from the source (no import), so it holds without the optional extras installed.
    """
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        source = next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)
        if source is None:
            continue
        rest = parts[i:]
        if not rest:
            return True
        if len(rest) > 1:
            return False
        names = set()
        for node in ast.parse(source.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(t.id for t in targets if isinstance(t, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
        return rest[0] in names
    return False


@pytest.fixture(scope="module")
def defined() -> set[str]:
    return sections(METHOD.read_text(encoding="utf-8"))


def test_the_scanners_read_citations_headings_and_spec_mentions():
    text = "see docs/method.md §7.3, §8 and §2.5; [method](method.md) §5; docs/method.md (no section); §9"
    assert cited_sections(text) == ["7.3", "8", "2.5", "5"]
    assert sections("# The method\n## 1. Setting\n### 2.3 Gradient\n## References\n") == {"1", "2.3"}
    assert own_sections("## 4. Proxy\nsee §4.3 and KDD'24 §4.2 and KDD'24\n§8.4, (§6)") == ["4.3", "6"]
    assert [bool(OLD_SPEC.search(s)) for s in ("SPEC's protocol", "SPEC_SIZES", "../shared/SPEC.md", "MethodSpec",
                                               "INSPECT", "spec")] == [True, True, True, False, False, False]


def test_method_doc_has_the_numbered_sections_code_cites(defined):
    assert {str(n) for n in range(1, 10)} <= defined
    # Every subsection's parent section exists.
    assert {n.rsplit(".", 1)[0] for n in defined if "." in n} <= defined


def test_method_doc_cites_its_own_sections_correctly(defined):
    missing = sorted(set(own_sections(METHOD.read_text(encoding="utf-8"))) - defined)
    assert not missing, f"docs/method.md cites its own section(s) {missing}, which it does not have"


def test_every_citation_of_method_doc_names_an_existing_section(defined):
    bad, count = [], 0
    for path in repository_files():
        for number in cited_sections(path.read_text(encoding="utf-8", errors="replace")):
            count += 1
            if number not in defined:
                bad.append(f"{path.relative_to(ROOT)}: docs/method.md §{number}")
    assert not bad, f"citations of sections docs/method.md does not have: {bad}"
    assert count >= 20, f"found only {count} citations of docs/method.md: is the scan reading the repository?"


def test_nothing_cites_the_spec_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in repository_files()
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if OLD_SPEC.search(line)
    ]
    assert not found, "cite docs/method.md (and the paper's equation/section) instead of SPEC:\n" + "\n".join(found)


def test_the_code_method_doc_names_exists():
    """The modules and names the page points to are where it says (a move must update the page)."""
    names = sorted(set(DOTTED.findall(METHOD.read_text(encoding="utf-8"))))
    assert len(names) >= 10, names
    assert resolves("ptdistill.proxy.solver.solve_proxy") and not resolves("ptdistill.proxy.no_such_name")
    missing = [name for name in names if not resolves(name)]
    assert not missing, f"docs/method.md names {missing}, which the package does not have"


def test_method_doc_gives_the_full_references():
    text = METHOD.read_text(encoding="utf-8")
    references = " ".join(text[text.index("## References"):].split())
    for needle in (
        "Knowledge Distillation with Perturbed Loss: From a Vanilla Teacher to a Proxy Teacher",
        "https://doi.org/10.1145/3637528.3671851",
        "PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions",
        "Distilling the Knowledge in a Neural Network",
        "Does Knowledge Distillation Really Work?",
        "A Statistical Perspective on Distillation",
    ):
        assert needle in references, needle
