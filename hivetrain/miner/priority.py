"""The training loop's CPU priority.

A miner does two kinds of work: training, which takes all the CPU it is given, and work with a
deadline: answering validator probes (``--validator.timeout``), reducing its parts of each
all-reduce (``--train.averaging_timeout``) and serving the DHT. On a CPU-bound host the two
compete, and a probe answered late scores 0.1 however well the miner trains. Measured on the
2-core test machine: two CLI processes beside a two-miner swarm took 54 s with the training
loops at the default priority and 31 s at nice 10 (docs/benchmarks.md).

On Linux the nice value belongs to a thread, so lowering the training thread's priority leaves
the API thread and the DHT, averager and p2pd processes, all started before it, at theirs. An
unprivileged thread cannot raise its priority again, and whatever it starts later inherits the
lower one: call this just before the loop, once everything else is running.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)


def lower_this_thread(increment: int) -> None:
    """Add ``increment`` to the calling thread's nice value (Linux; a no-op elsewhere, where the
    nice value belongs to the whole process)."""
    if increment == 0:
        return
    if not sys.platform.startswith("linux"):
        logger.info("--train.nice applies on Linux only; the training loop keeps its priority")
        return
    thread = threading.get_native_id()
    now = os.getpriority(os.PRIO_PROCESS, thread)
    os.setpriority(os.PRIO_PROCESS, thread, min(19, now + increment))
    logger.info("training loop at nice %d (the API, DHT, averager and p2pd stay at %d)",
                os.getpriority(os.PRIO_PROCESS, thread), now)
