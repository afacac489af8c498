"""What code outside ``swarm/`` may ask about the swarm's progress.

hivemind's ``ProgressTracker`` (and its admitted, bounded subclass in :mod:`hivetrain.swarm.tracker`)
stays inside this package: the miner's loop, its catch-up, the validator and ``hivetrain export``
read the swarm's epoch, size and newcomers through these members of either training mode's
optimizer.
"""

from __future__ import annotations


class SwarmView:
    """Mixed into both swarm optimizers; ``tracker`` is the optimizer's progress tracker."""

    tracker: object  # set by the optimizer

    @property
    def swarm_epoch(self) -> int:
        """The swarm's epoch as the counted progress records tell it."""
        return self.tracker.global_epoch

    @property
    def swarm_peers(self) -> int:
        """Peers reporting progress (this one included)."""
        return self.tracker.global_progress.num_peers

    @property
    def newcomers(self) -> frozenset[str]:
        """Peers reporting progress that this one does not admit: registered and committed since
        the admitted set was last read from the chain (read it again), or never. Always empty in
        sync mode, which admits every peer."""
        return getattr(self.tracker, "newcomers", frozenset())

    def wait_for_swarm_progress(self, timeout: float) -> bool:
        """Block until the swarm's progress was read from the DHT once this epoch, or ``timeout``."""
        return self.tracker.fetched_global_progress_this_epoch.wait(timeout)
