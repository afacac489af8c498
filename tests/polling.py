"""Waiting on other processes in tests: poll what they write, with a deadline, never a bare sleep."""

import time

from hivetrain.telemetry import read_metrics


def records(run_dir, kind):
    """A neuron's metrics records of one kind, oldest first."""
    return [r for r in read_metrics(run_dir) if r["kind"] == kind]


def wait_until(predicate, timeout, what, group=None):
    """Return the first truthy ``predicate()``; fail if a neuron of ``group`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group is not None:
            group.check_alive()
        value = predicate()
        if value:
            return value
        time.sleep(0.5)  # polling other processes' metrics files or background threads
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
