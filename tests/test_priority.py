"""--train.nice lowers the training thread's CPU priority and nothing else's."""

import os
import sys
import threading

import pytest

from hivetrain.miner.priority import lower_this_thread


def own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def in_a_thread(loop) -> None:
    """Run ``loop`` in a thread of its own, as the miner runs its training loop, and wait."""
    thread = threading.Thread(target=loop)
    thread.start()
    thread.join()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_only_the_calling_thread_is_lowered():
    own = own_nice()
    seen = {}

    def training_loop():
        lower_this_thread(5)
        seen["trainer"] = own_nice()
        in_a_thread(lambda: seen.update(child=own_nice()))

    in_a_thread(training_loop)
    assert seen["trainer"] == min(19, own + 5)
    assert seen["child"] == seen["trainer"]  # what the loop starts later inherits it
    assert own_nice() == own
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == own  # the process (main thread) too


def test_zero_leaves_the_priority_alone():
    own = own_nice()
    seen = {}

    def training_loop():
        lower_this_thread(0)
        seen["trainer"] = own_nice()

    in_a_thread(training_loop)
    assert seen["trainer"] == own
