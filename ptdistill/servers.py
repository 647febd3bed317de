"""Run a long-lived server (``ptdistill ui``'s ``mlflow server``) and stop its whole process tree on a signal.

``mlflow server`` starts uvicorn and, when job execution is on, a huey job runner, which may
start job processes in sessions of their own. Stopping only the process we started (what an
``exec`` of ``mlflow server`` amounts to on Ctrl-C) left the runner and workers behind.
"""

from __future__ import annotations

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it

import os
import signal
import subprocess
import time
from collections.abc import Sequence

import psutil

#: Seconds the tree gets to exit after the signal is passed on, before SIGKILL.
GRACE_SECONDS = 10.0


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def run_server(cmd: Sequence[str], env: dict[str, str], grace_seconds: float = GRACE_SECONDS) -> int:
    """Run ``cmd`` until it exits, or until this process gets SIGINT (Ctrl-C), SIGTERM or SIGHUP
    (the terminal closed).

    The server runs in a session (and process group) of its own, so only this process receives
    the terminal's Ctrl-C. On either signal the tree is stopped by :func:`stop_tree`. Returns the
    server's exit code, or ``128 + signal`` when a signal stopped it: 130 for SIGINT, 143 for
    SIGTERM, 129 for SIGHUP, as a shell reports.
    """
    def stop(signum: int, _frame) -> None:
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    server = None
    try:
        server = subprocess.Popen(list(cmd), env=env, start_new_session=True)
        return server.wait()
    except _Stop as received:
        for sig in previous:  # a second Ctrl-C must not cut the stop short
            signal.signal(sig, signal.SIG_IGN)
        if server is not None:
            stop_tree(server, grace_seconds)
        return 128 + received.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_tree(server: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM to ``server``'s process group and to its descendants outside it (listed before any of
    them can exit and be re-parented); SIGKILL to what is left after ``grace_seconds``.

    SIGTERM, not the SIGINT of a Ctrl-C: uvicorn, huey and ``mlflow server`` shut down cleanly on
    either, and the Python processes without a handler then exit without a KeyboardInterrupt
    traceback each. Each process gets the signal once (uvicorn takes a second one as "exit now").
    """
    try:
        tree = psutil.Process(server.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    deadline = time.monotonic() + grace_seconds
    _signal(server, tree, signal.SIGTERM)
    try:
        server.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(tree, timeout=max(0.0, deadline - time.monotonic()))
    _signal(server, alive, signal.SIGKILL)  # also whatever joined the group after the listing
    server.wait()
    psutil.wait_procs(alive, timeout=5)


def _signal(server: subprocess.Popen, processes: list[psutil.Process], signum: int) -> None:
    """``signum`` to the server's group (the server among them) and to ``processes`` outside the group."""
    try:
        os.killpg(server.pid, signum)
    except ProcessLookupError:
        pass
    for process in processes:
        try:
            if os.getpgid(process.pid) != server.pid:
                process.send_signal(signum)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
