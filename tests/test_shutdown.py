"""The stop guard in real processes under a real SIGTERM: the final state is written exactly once,
by the main thread when its loop returns, by the watchdog when the loop is stuck."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A neuron in miniature: a loop that either stops when asked or blocks forever (as a training
# step blocks on a helper process the signal ended), and a final state appended to a file.
NEURON = textwrap.dedent("""
    import sys, threading
    from hivetrain.shutdown import StopGuard
    final, stuck = sys.argv[1], sys.argv[2] == "stuck"
    stop = threading.Event()

    def write(who):
        with open(final, "a") as handle:
            handle.write(who + "\\n")

    guard = StopGuard(on_stop=stop.set, finish=lambda: write("watchdog"), grace=1.0)
    import signal
    signal.signal(signal.SIGTERM, guard.on_signal)
    print("ready", flush=True)
    try:
        if stuck:
            threading.Event().wait()  # never set: the step that never returns
        stop.wait()
    finally:
        guard.loop_returned()
        write("main")
""")


@pytest.mark.parametrize("loop, writer", [("stops", "main"), ("stuck", "watchdog")])
def test_the_final_state_is_written_once_by_whoever_can(tmp_path, loop, writer):
    final = tmp_path / "final.txt"
    neuron = subprocess.Popen([sys.executable, "-c", NEURON, str(final), loop],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert neuron.stdout.readline().strip() == "ready"
        neuron.send_signal(signal.SIGTERM)
        assert neuron.wait(timeout=60) == 0
    finally:
        neuron.kill()
    assert final.read_text().splitlines() == [writer]
