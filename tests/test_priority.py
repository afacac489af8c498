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


def nice_seen_by_a_training_loop(increment: int) -> dict:
    """The nice values a training loop sees after ``lower_this_thread(increment)``: its own
    (``trainer``) and that of a thread it starts afterwards (``child``)."""
    seen = {}

    def training_loop():
        lower_this_thread(increment)
        seen["trainer"] = own_nice()
        in_a_thread(lambda: seen.update(child=own_nice()))

    in_a_thread(training_loop)
    return seen


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_only_the_calling_thread_is_lowered():
    own = own_nice()
    seen = nice_seen_by_a_training_loop(5)
    assert seen["trainer"] == min(19, own + 5)
    assert seen["child"] == seen["trainer"]  # what the loop starts later inherits it
    assert own_nice() == own
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == own  # the process (main thread) too


def test_zero_leaves_the_priority_alone():
    own = own_nice()
    assert nice_seen_by_a_training_loop(0)["trainer"] == own
