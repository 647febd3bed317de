"""docs/architecture.md and the README's layout section match the tree: every path they name
exists, and every module and package of the library is placed in a room of the map."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAP = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
LAYOUT = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Layout\n", 1)[1]
#: A path in backticks that starts at a room of the repository.
PATH = re.compile(r"`((?:ptdistill|components|pipelines|images|infra|tests|benchmarks|docs)/[\w./<>-]*)`")


def named_paths(text: str) -> set[str]:
    return {p for p in PATH.findall(text) if "<" not in p}


def test_every_path_the_map_and_the_layout_name_exists():
    paths = named_paths(MAP) | named_paths(LAYOUT)
    assert len(paths) > 10
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []


def test_every_library_module_is_placed_in_a_room_of_the_map():
    modules = [p for p in (ROOT / "ptdistill").iterdir() if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
               or (p.is_dir() and (p / "__init__.py").exists())]
    names = {f"{p.name}/" if p.is_dir() else p.name for p in modules}
    unplaced = sorted(n for n in names if f"`{n}`" not in MAP and f"`ptdistill/{n}`" not in MAP)
    assert unplaced == []


def test_every_family_package_is_in_the_registry_and_the_layout():
    from ptdistill.families import FAMILIES

    packages = {p.name for p in (ROOT / "ptdistill" / "families").iterdir() if (p / "backend.py").exists()}
    assert packages == set(FAMILIES)
    assert all(f"`{name}/`" in LAYOUT for name in packages)


def test_the_checks_catch_a_missing_path_and_an_unplaced_module():
    assert named_paths("see `ptdistill/nowhere.py` and `docs/<x>.md`") == {"ptdistill/nowhere.py"}
    assert not (ROOT / "ptdistill/nowhere.py").exists()
