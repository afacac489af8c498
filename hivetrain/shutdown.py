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
