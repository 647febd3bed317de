"""Commands the command line suggests (``run `ptdistill ui```), spelled so that they work where they are printed.

From a fresh clone the console script is ``.venv/bin/ptdistill``, not on ``PATH``: a hint that
says ``ptdistill ui`` then fails with "command not found".
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def ptdistill_command(*args: str, tracking_uri: str | None = None) -> str:
    """``ptdistill ARGS`` as a shell command that runs this installation from the working directory.

    The program is ``ptdistill`` when that name on ``PATH`` is this installation's console script,
    else the script's path (relative to the working directory when inside it, e.g.
    ``.venv/bin/ptdistill``, else absolute), else ``<python> -m ptdistill`` when there is no
    script. ``tracking_uri``, when given (pass the one the user named, not the default), is added
    as ``--tracking-uri``. Arguments are shell-quoted.
    """
    words = [*_program(), *args]
    if tracking_uri:
        words += ["--tracking-uri", tracking_uri]
    return shlex.join(words)


def _program() -> list[str]:
    argv0 = Path(sys.argv[0])
    script = argv0 if argv0.name == "ptdistill" else Path(sys.executable).parent / "ptdistill"
    if not script.is_file():
        return [_from_cwd(Path(sys.executable)), "-m", "ptdistill"]
    on_path = shutil.which("ptdistill")
    if on_path is not None and os.path.samefile(on_path, script):
        return ["ptdistill"]
    return [_from_cwd(script)]


def _from_cwd(path: Path) -> str:
    """``path`` as typed from the working directory (not resolved: a venv's ``bin/python`` is a symlink)."""
    path = path.absolute()
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return str(relative) if relative.parent != Path(".") else f"./{relative}"
