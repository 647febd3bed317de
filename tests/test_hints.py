"""Commands the CLI suggests work where they are printed (ptdistill/hints.py)."""

from __future__ import annotations

import os
import sys

import pytest

from ptdistill.hints import ptdistill_command


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A fresh clone's layout: ``<clone>/.venv/bin/{python,ptdistill}``, cwd the clone, nothing on PATH."""
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "ptdistill"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setattr(sys, "argv", [str(bin_dir / "ptdistill"), "run", "synthetic"])
    return tmp_path


def test_a_script_not_on_path_is_named_by_its_path_from_the_working_directory(clone):
    assert ptdistill_command("ui") == ".venv/bin/ptdistill ui"


def test_python_dash_m_names_the_same_installation_s_script(clone, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(clone / "src" / "ptdistill" / "__main__.py"), "run"])
    assert ptdistill_command("ui") == ".venv/bin/ptdistill ui"


def test_the_script_on_path_is_named_ptdistill(clone, monkeypatch):
    monkeypatch.setenv("PATH", str(clone / ".venv" / "bin"))
    assert ptdistill_command("ui") == "ptdistill ui"


def test_another_ptdistill_on_path_is_not_this_one(clone, monkeypatch, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    (other / "ptdistill").write_text("#!/bin/sh\n")
    (other / "ptdistill").chmod(0o755)
    monkeypatch.setenv("PATH", str(other))
    assert ptdistill_command("ui") == ".venv/bin/ptdistill ui"


def test_outside_the_working_directory_the_path_is_absolute(clone, monkeypatch):
    (clone / "work").mkdir()
    monkeypatch.chdir(clone / "work")
    assert ptdistill_command("ui") == f"{clone}/.venv/bin/ptdistill ui"


def test_a_script_in_the_working_directory_gets_dot_slash(clone, monkeypatch):
    monkeypatch.chdir(clone / ".venv" / "bin")
    assert ptdistill_command("ui") == "./ptdistill ui"


def test_without_a_console_script_python_dash_m(clone, monkeypatch):
    os.remove(clone / ".venv" / "bin" / "ptdistill")
    monkeypatch.setattr(sys, "argv", [str(clone / "ptdistill" / "__main__.py"), "ui"])
    assert ptdistill_command("ui") == ".venv/bin/python -m ptdistill ui"


def test_a_named_tracking_uri_is_passed_on_quoted(clone):
    assert ptdistill_command("ui", tracking_uri="sqlite:////tmp/my runs/mlflow.db") \
        == ".venv/bin/ptdistill ui --tracking-uri 'sqlite:////tmp/my runs/mlflow.db'"
    assert ptdistill_command("run", "synthetic", tracking_uri=None) == ".venv/bin/ptdistill run synthetic"


@pytest.mark.slow
def test_compare_with_no_runs_prints_a_runnable_hint(clone, capsys):
    from ptdistill.cli import main

    uri = f"sqlite:///{clone / 'mlflow.db'}"
    assert main(["compare", "synthetic", "--tracking-uri", uri]) == 1
    assert f"run `.venv/bin/ptdistill run synthetic --tracking-uri {uri}` first" in capsys.readouterr().out
