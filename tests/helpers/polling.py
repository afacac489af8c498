"""Waiting on other processes in tests: poll what they write, with a deadline, never a bare sleep.

A neuron appends to one metrics file across restarts, so "what it did since X" is a position in
that file, never a count of records (how many records a run wrote by some moment is timing).
"""

import time

from hivetrain.telemetry import read_metrics


def records(run_dir, kind):
    """A neuron's metrics records of one kind, oldest first."""
    return [r for r in read_metrics(run_dir) if r["kind"] == kind]


def records_after(run_dir, kind, mark):
    """Records of ``kind`` the neuron wrote after the record ``mark`` (any kind; all when None)."""
    written = read_metrics(run_dir)
    if mark is not None:
        written = written[written.index(mark) + 1:] if mark in written else []
    return [r for r in written if r["kind"] == kind]


def current_run(run_dir, kind):
    """Records of ``kind`` written by the neuron's latest run (after its last ``start`` record)."""
    starts = records(run_dir, "start")
    return records_after(run_dir, kind, starts[-1]) if starts else []


def wait_until(predicate, timeout, what, group=None):
    """Return the first truthy ``predicate()``; fail if a neuron of ``group`` dies or time runs out.

    ``what`` names the awaited fact in the failure; a callable is asked then, so the message can
    tell what the predicate saw last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group is not None:
            group.check_alive()
        value = predicate()
        if value:
            return value
        time.sleep(0.5)  # polling other processes' metrics files or background threads
    awaited = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout} s waiting for {awaited}")
