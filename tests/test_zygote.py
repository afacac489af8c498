"""The process tests' fork server (tests/helpers/zygote.py): a forked neuron is a process of its
own, as one started from a fresh interpreter is."""

import os
import signal

from helpers.polling import wait_until

HOLDER = """
import signal
from hivemind.utils.mpfuture import MPFuture
MPFuture._update_lock.acquire()
print("holding", flush=True)
signal.pause()
"""

TAKER = """
import sys
from hivemind.utils.mpfuture import MPFuture
sys.exit(0 if MPFuture._update_lock.acquire(timeout=10) else 1)
"""


def test_a_child_killed_holding_a_hivemind_lock_does_not_hang_the_next(zygote, tmp_path):
    """hivemind's import-time process-shared locks: SIGKILL one forked child while it holds one
    (as the subnet fixtures' SIGKILL can), and the next child still takes its own."""
    (tmp_path / "holder.py").write_text(HOLDER)
    (tmp_path / "taker.py").write_text(TAKER)
    log = tmp_path / "holder.log"
    holder = zygote.spawn([str(tmp_path / "holder.py")], log, dict(os.environ))
    wait_until(lambda: log.exists() and "holding" in log.read_text(), 60, "the lock to be held")
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(30) == -signal.SIGKILL

    taker, = zygote.run([[str(tmp_path / "taker.py")]], timeout=60)
    assert taker.returncode == 0, taker.stderr[-2000:]
