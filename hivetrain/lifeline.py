"""Helper processes that die with their neuron, kill -9 included.

hivemind runs the DHT and each averager in a forked ``multiprocessing`` child, and the DHT child
runs the p2pd daemon, which holds the DHT port. A neuron killed with SIGKILL (the OOM killer,
pm2's kill timeout, an operator) runs no cleanup of its own, so these helpers were re-parented
to init and kept running: the restart on a fixed ``--dht.port`` then failed with "port already
in use" (issue 14: 17 of 30 miner kills), a pm2 restart loop. Linux's parent-death signal ends a
process when its parent dies, whatever killed the parent. :func:`install` sets it in every child
forked from this process (and, since the hook is inherited, in their forked children), and a
preexec hook sets it in the programs those children start through asyncio (p2pd).

The signal is tied to the *thread* that forked, so only forks from a main thread are bound: a
child forked by a short-lived worker thread would otherwise be killed when that thread ends.
Elsewhere than Linux this is a no-op.
"""

from __future__ import annotations

import asyncio.subprocess
import ctypes
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1

_installed = False
_fork = {"parent": 0, "from_main_thread": False}


def bind_to_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies; exit now if the parent is already gone.

    The check after prctl closes the race where the parent dies between the fork and the call.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not permitted here: the helper lives on as before, nothing worse
    if os.getppid() != parent_pid:
        os._exit(1)


def _bound_create_subprocess_exec(create):
    """``asyncio.subprocess.create_subprocess_exec`` whose programs die with the caller."""

    async def create_subprocess_exec(*args, preexec_fn=None, **kwargs):
        caller = os.getpid()

        def preexec() -> None:
            bind_to_parent(caller)
            if preexec_fn is not None:
                preexec_fn()

        return await create(*args, preexec_fn=preexec, **kwargs)

    create_subprocess_exec.binds_to_parent = True
    return create_subprocess_exec


def _before_fork() -> None:
    _fork["parent"] = os.getpid()
    _fork["from_main_thread"] = threading.current_thread() is threading.main_thread()


def _after_fork_in_child() -> None:
    if not _fork["from_main_thread"]:
        return
    bind_to_parent(_fork["parent"])
    # Only in the child: the neuron's own subprocesses (pm2 helpers, tests) are left as they are.
    create = asyncio.subprocess.create_subprocess_exec
    if not getattr(create, "binds_to_parent", False):
        asyncio.subprocess.create_subprocess_exec = _bound_create_subprocess_exec(create)


def install() -> None:
    """Bind every process forked from now on (hivemind's DHT, averagers, their p2pd) to its parent."""
    global _installed
    if _installed or not sys.platform.startswith("linux"):
        return
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    _installed = True
