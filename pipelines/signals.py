"""Stop a local run cleanly on SIGINT, SIGTERM or SIGHUP: end every task process, then let the runner clean up.

kfp.local starts each task with ``subprocess.Popen`` (``sh -ec '... python -m kfp.dsl.executor_main'``)
in this process's own process group, from the main thread or, for ParallelFor items, from a thread
pool whose shutdown waits for every running and queued item. An exception raised in the main thread
by a signal therefore neither stops the task processes nor lets the run unwind: the pool waits for
them, then starts the queued items. So the handler first ends every descendant process (SIGTERM,
then SIGKILL after a grace period) and keeps ending new ones until the run has unwound; only then
does the exception reach the runner's clean-up. The process group itself is never signalled: the
CLI may share it with whatever started it (a shell script, a test).
"""

from __future__ import annotations

from ptdistill.extras import require

require("pipelines", __name__)  # one line naming the extra, before the imports that need it

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType

import psutil

#: Signals a local run stops on, like on a failed task (SIGHUP: the terminal or SSH session closed).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Seconds a task process gets between SIGTERM and SIGKILL.
GRACE_SECONDS = 5.0


class RunInterrupted(BaseException):
    """A local run was stopped by a signal. A BaseException, like KeyboardInterrupt, so that
    kfp.local's ``except Exception`` handlers do not swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's code for death by this signal: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP."""
        return 128 + self.signum


def _gone(process: psutil.Process) -> bool:
    # A zombie has ended; it is left for its parent (kfp.local's Popen) to reap, so that Popen
    # still reads the signal's exit status rather than a reaped child's 0.
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def end_children(grace: float = GRACE_SECONDS) -> int:
    """End every live descendant of this process: SIGTERM to all at once, SIGKILL to those still
    alive ``grace`` seconds later. Returns how many there were. All are listed before any is
    signalled, so a task's grandchildren are found before their parent's death re-parents them."""
    children = psutil.Process().children(recursive=True)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in children if not _gone(p)]
        for process in alive:
            try:
                process.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [p for p in alive if not _gone(p)]
        if not alive:
            break
    return len(children)


def _kfp_reports(record: logging.LogRecord) -> bool:
    """Root-logger filter while a stopped run unwinds: kfp.local logs on the root logger (and so
    on stderr) each task it had running as FAILED; those are the tasks this module ended."""
    return False


class StopOnSignals:
    """Context manager: inside it, the first SIGINT, SIGTERM or SIGHUP ends every task process and raises
    :class:`RunInterrupted` in the main thread; later signals are ignored until the context exits,
    so the (time-bounded) clean-up that follows always finishes. ``quiet()`` ignores signals from
    then on too (a failed run's clean-up). Outside the main thread it does nothing (Python only
    delivers signals there). ``also_end`` ends what is not a process of ours, alongside each round of
    :func:`end_children` (the docker runner's task containers, which the daemon starts)."""

    def __init__(self, also_end: Callable[[], object] | None = None) -> None:
        self._also_end = also_end
        self.signum: int | None = None
        self._quiet = False
        self._previous: dict[int, object] = {}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None or self._quiet:
            return
        self.signum = signum
        logging.getLogger().addFilter(_kfp_reports)
        self._reaper = threading.Thread(target=self._reap, name="ptdistill-end-tasks", daemon=True)
        self._reaper.start()
        raise RunInterrupted(signum)

    def _reap(self) -> None:
        """End task processes until told to stop: kfp.local may start queued ones meanwhile."""
        while not self._stop.is_set():
            self._end()
            self._stop.wait(0.2)

    def _end(self) -> None:
        end_children()
        if self._also_end is not None:
            self._also_end()

    def quiet(self) -> None:
        """Ignore signals from now on; if a signal stopped the run, wait until no task process is left."""
        self._quiet = True
        if self._reaper is not None:
            self._stop.set()
            self._reaper.join()
            self._end()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.quiet()
        logging.getLogger().removeFilter(_kfp_reports)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
