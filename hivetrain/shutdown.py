"""Ending a neuron whose whole process tree was signalled at once.

pm2 stops an app by signalling every process of its tree, so hivemind's DHT and averager
processes, their p2pd daemons and torch's shared-memory manager receive SIGINT/SIGTERM at the
same moment as the neuron. Their shutdown calls then wait on pipes that nobody answers any more:
the miner hung for pm2's whole kill timeout (60 s) and was SIGKILLed, its last log lines lost.
The neuron's own state (checkpoint, scores, stop record) is written before this point; what is
left is released within a deadline, and the helper processes still alive after it are killed, so
no p2pd is left holding the DHT port for the restart.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from typing import Callable

logger = logging.getLogger(__name__)

RELEASE_TIMEOUT_S = 15.0
# How long the main loop may take to return after the stop signal before a watchdog writes the
# final state itself. With the emergency path's own bounds (checkpoint 20 s, stop record 5 s) it
# ends well inside pm2's 60 s kill timeout (run_miner.sh).
STOP_GRACE_S = 15.0


class StopGuard:
    """Turns SIGINT/SIGTERM into a graceful stop, and ends the neuron from a watchdog when its
    main loop does not come back.

    The signal reaches hivemind's DHT and averager processes too (pm2 signals the whole tree), and
    a training step that calls into them then waits on a pipe nobody answers: measured in a loaded
    fresh-clone ``make test`` (tests/test_stop.py), the miner never left its step, pm2 SIGKILLed it
    after 60 s and the final checkpoint was lost. So the first signal sets ``on_stop`` (the loop
    ends after its step) and starts a watchdog; if the loop has not returned ``grace`` seconds
    later, the watchdog runs ``finish`` (the checkpoint and the stop record) and ends the process.
    Exactly one of the two paths writes the final state.

    :param on_stop: asks the main loop to stop (e.g. ``trainer.stop.set``).
    :param finish: writes the final state from the watchdog; must bound its own waits.
    """

    def __init__(self, on_stop: Callable[[], None], finish: Callable[[], None],
                 grace: float = STOP_GRACE_S):
        self._on_stop, self._finish, self.grace = on_stop, finish, grace
        self._signalled, self._returned = threading.Event(), threading.Event()
        self._final = threading.Lock()  # held by the path that writes the final state

    def on_signal(self, *_) -> None:
        """The signal handler: stop the loop, and watch that it does."""
        if self._signalled.is_set():
            return
        self._signalled.set()
        self._on_stop()
        threading.Thread(target=self._watch, name="hivetrain-stop-watchdog", daemon=True).start()

    def loop_returned(self) -> None:
        """Called by the main thread when its loop is over, before it writes the final state.
        When the watchdog already is writing it, this never returns: the watchdog ends the
        process."""
        self._returned.set()
        if not self._final.acquire(blocking=False):
            self._final.acquire()  # never released: the watchdog ends the process

    def _watch(self) -> None:
        if self._returned.wait(self.grace) or not self._final.acquire(blocking=False):
            return
        logger.warning("the main loop did not return within %.0f s of the stop signal (a call into "
                       "a helper process the signal ended); writing the final state from here",
                       self.grace)
        try:
            self._finish()
        finally:
            end_process(0)


def release(steps: list[tuple[str, Callable[[], object]]],
            timeout: float = RELEASE_TIMEOUT_S) -> bool:
    """Run the shutdown steps in order within ``timeout`` seconds; False if one overran.

    A step that raises is logged and the next one still runs: a dead DHT must not keep the
    chain connection open.
    """
    current = {"step": None}

    def run_steps() -> None:
        for name, step in steps:
            current["step"] = name
            try:
                step()
            except Exception as error:  # noqa: BLE001 - shutdown goes on whatever one step does
                logger.warning("stopping %s failed: %s", name, error)
        current["step"] = None

    worker = threading.Thread(target=run_steps, name="hivetrain-release", daemon=True)
    worker.start()
    worker.join(timeout)
    if not worker.is_alive():
        return True
    logger.warning("stopping %s did not finish within %.0f s (its helper processes were "
                   "signalled too); ending them", current["step"], timeout)
    return False


def end_process(exit_code: int = 0) -> None:
    """Kill the helper processes still alive, flush the logs and exit without joining them."""
    for child in multiprocessing.active_children():
        child.kill()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
