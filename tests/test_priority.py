"""--train.nice lowers the training thread's CPU priority and nothing else's."""

import os
import sys
import threading

import pytest

from hivetrain.miner.priority import lower_this_thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_only_the_calling_thread_is_lowered():
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def training_loop():
        lower_this_thread(5)
        seen["trainer"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        started_after = threading.Thread(target=lambda: seen.update(
            child=os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        started_after.start()
        started_after.join()

    thread = threading.Thread(target=training_loop)
    thread.start()
    thread.join()
    assert seen["trainer"] == min(19, own + 5)
    assert seen["child"] == seen["trainer"]  # what the loop starts later inherits it
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == own  # the process (main thread) too


def test_zero_leaves_the_priority_alone():
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def loop():
        lower_this_thread(0)
        seen["trainer"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=loop)
    thread.start()
    thread.join()
    assert seen["trainer"] == own
