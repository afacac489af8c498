"""The pace of the in-process swarm tests' inner steps.

An in-process peer's inner step is a few operations on a test tensor, while a round ends only
when the swarm's progress reports (one a second, ``REPORT_EVERY`` in hivetrain/swarm/diloco.py)
add up to its target. Stepping flat out, each peer took step after step that no round needed and
kept a core busy that the other test worker's processes were waiting for. So each step first takes
``STEP_SECONDS``, standing for the compute of a real inner step. Nothing waits on this pause:
the tests still wait for their rounds' facts.
"""

import time

STEP_SECONDS = 0.02


def paced_step(opt) -> None:
    """One inner step of ``opt`` (a DiLoCoOptimizer) after the time a real one computes."""
    time.sleep(STEP_SECONDS)
    opt.step()
