"""A real miner that attacks the swarm in one way, for the robust-swarm tests.

    python tests/helpers/swarm_attacker.py MODE miner <miner flags>

MODE is what it does differently from ``hivetrain miner``:

* ``nan`` / ``inf`` / ``scaled`` (x1e4) / ``sign_flip``: its pseudo-gradient in the all-reduce;
* ``inflated_samples``: claims a million times the samples it trained as its averaging weight;
* ``bad_reduce``: returns x1e3 the average for the part of the all-reduce it reduces;
* ``poison_state``: advertises the highest state-sharing priority (1e12) and serves NaN global
  parameters labelled 50 epochs ahead to anyone downloading the state;
* ``initial_state``: the same priority, serving the run's initial weights (its own ``G`` as it
  started) labelled with its current epoch: finite, the right shape, an epoch the swarm is at;
* ``stale_state``: the same priority, serving the first state it ever served, labelled one epoch
  ahead of its own (the most a download accepts ahead of the swarm);
* ``fake_progress``: trains and averages honestly, but every progress record it publishes claims
  50 epochs more than it reached and a million times its samples and its rate (what moved the
  swarm's observers to a fake epoch, and ended rounds early, before ``swarm/tracker.py``);
* ``unregistered``: ``poison_state`` from a hotkey that is not registered on the subnet (it skips
  the registration check and commits nothing on chain, so no miner admits its DHT identity).
"""

import sys

import torch

from hivetrain.chain import Chain
from hivetrain.cli import main
from hivetrain.swarm import robust
from hivetrain.swarm.diloco import DiLoCoOptimizer

MODE = sys.argv.pop(1)
# Epochs a lying attacker adds to what it serves or reports (tests/test_robust_swarm.py relies
# on this figure as FAKE_EPOCHS; this script runs its attack on import, so it cannot be imported).
FAKE_EPOCHS = 50
CHANGES = {
    "nan": lambda c: torch.full_like(c, float("nan")),
    "inf": lambda c: torch.full_like(c, float("inf")),
    "scaled": lambda c: c * 1e4,
    "sign_flip": lambda c: -c,
}


def attack_change() -> None:
    average = DiLoCoOptimizer._average
    corrupt = CHANGES.get(MODE, lambda c: c)
    factor = 10 ** 6 if MODE == "inflated_samples" else 1

    def corrupted(self, change, samples):
        return average(self, [corrupt(c) for c in change], samples * factor)

    DiLoCoOptimizer._average = corrupted


def attack_reduction() -> None:
    honest = robust.robust_mean
    robust.robust_mean = lambda *args, **kwargs: honest(*args, **kwargs) * 1e3


def attack_state() -> None:
    serve, init = DiLoCoOptimizer._current_state, DiLoCoOptimizer.__init__
    first_served = []

    def remember_initial(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.initial_params = [g.clone() for g in self.global_params]

    def poisoned(self):
        metadata, tensors, infos = serve(self)
        n = len(self.global_params)
        if MODE == "initial_state":
            return metadata, self.initial_params + tensors[n:], infos
        if MODE == "stale_state":
            if not first_served:
                first_served.append((metadata, tensors, infos))
            old_metadata, old_tensors, old_infos = first_served[0]
            return {**old_metadata, "epoch": metadata["epoch"] + 1}, old_tensors, old_infos
        return ({**metadata, "epoch": metadata["epoch"] + FAKE_EPOCHS},
                [torch.full_like(t, float("nan")) for t in tensors], infos)

    def loudest(self):
        self.averager.state_sharing_priority = 1e12

    if MODE == "initial_state":  # the only mode that serves the weights it started from
        DiLoCoOptimizer.__init__ = remember_initial
    DiLoCoOptimizer._current_state = poisoned
    DiLoCoOptimizer._share_state_priority = loudest


def fake_progress() -> None:
    """Inflate what is published (``LocalTrainingProgress.dict()`` is what the tracker stores
    in the DHT), not what this process's own tracker reasons with."""
    from hivemind.optim.progress_tracker import LocalTrainingProgress

    honest = LocalTrainingProgress.dict

    def inflated(self, *args, **kwargs):
        record = honest(self, *args, **kwargs)
        return {**record, "epoch": record["epoch"] + FAKE_EPOCHS,
                "samples_accumulated": record["samples_accumulated"] * 10 ** 6,
                "samples_per_second": record["samples_per_second"] * 10 ** 6}

    LocalTrainingProgress.dict = inflated


def skip_registration() -> None:
    Chain.ensure_registered = lambda self: 0
    Chain.commit_dht_addrs = lambda self, addrs, run_id=None: True
    Chain.serve = lambda self, ip, port: True


if MODE in CHANGES or MODE == "inflated_samples":
    attack_change()
elif MODE == "bad_reduce":
    attack_reduction()
elif MODE == "fake_progress":
    fake_progress()
elif MODE in ("poison_state", "initial_state", "stale_state", "unregistered"):
    attack_state()
    if MODE == "unregistered":
        skip_registration()
else:
    raise SystemExit(f"unknown mode {MODE}")

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
