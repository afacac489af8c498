"""Crash safety by soak (``make test-slow``): SIGKILL a miner and the validator again and again.

A two-miner swarm and a validator run on an embedded dev chain. One miner (the victim) and the
validator are each killed with SIGKILL at random, bounded moments (from a moment into start-up
to well into training), restarted, and killed again once their restart is checked. After every
kill the files left behind must load: the miner's ``checkpoint.pt`` and the validator's
``scores.json`` (both written atomically). After every restart the miner resumes at or after its
checkpoint's epoch and the validator's first round folds into the EMA it left behind. The other
miner, never killed, keeps stepping through it all.

``HIVETRAIN_SOAK_KILLS`` (default 10) sets the kills per victim; ``HIVETRAIN_SOAK_SEED`` makes
the moments repeatable.
"""

from __future__ import annotations

import math
import os
import random
import time

import pytest
import torch

from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import SwarmOptions, neuron_args, prepare_chain
from hivetrain.miner.checkpoint import CHECKPOINT_NAME, Checkpoint
from hivetrain.miner.neuron import PEER_FILE
from hivetrain.validator import state as score_store
from hivetrain.validator.state import SCORES_FILE
from hivetrain.validator.scoring import FLOOR
from helpers.polling import current_run, records, records_after, wait_until

KILLS = int(os.environ.get("HIVETRAIN_SOAK_KILLS", "10"))
# Longer than pytest.ini's 600 s: each kill waits for a restart (start-up is most of a minute).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600 + 90 * KILLS)]
SEED = int(os.environ.get("HIVETRAIN_SOAK_SEED", str(random.randrange(2 ** 32))))
ALPHA = 0.5
# Seconds after a restart was checked (or, for the first kill, after the swarm formed) before the
# next SIGKILL: short ones land in start-up, long ones mid-round, in checkpoints and in rounds.
KILL_AFTER = (0.0, 20.0)
FLAGS = ["--model.preset", "tiny", "--data.seq_len", "64", "--train.batch_size", "4",
         "--train.inner_steps", "10", "--train.matchmaking_time", "2",
         "--train.averaging_timeout", "15", "--train.log_every", "5", "--train.eval_batches", "1",
         "--train.checkpoint_every", "1", "--train.lr", "1e-3", "--train.warmup_epochs", "0",
         "--wandb.off"]
VALIDATOR_FLAGS = ["--validator.interval", "2", "--validator.alpha", str(ALPHA),
                   "--validator.timeout", "8"]


def checkpoint_left_behind(run_dir):
    """The checkpoint a killed miner left, loaded as the miner loads it; None if it wrote none."""
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    return Checkpoint(**torch.load(path, map_location="cpu", weights_only=False))


class Victim:
    """One neuron killed over and over: its next kill moment and the check its restart owes."""

    def __init__(self, name, role, group, options, rng, extra=()):
        self.name, self.role, self.group, self.options, self.rng = name, role, group, options, rng
        self.extra = list(extra)
        self.dir = options.out_dir / name
        self.neuron = group.start(name, self.dir, self.args())
        self.kills, self.pending, self.kill_at = 0, None, None

    def args(self):
        return neuron_args(self.role, self.name, self.options, self.extra)

    def schedule(self):
        self.kill_at = time.monotonic() + self.rng.uniform(*KILL_AFTER)

    def kill_and_restart(self):
        """SIGKILL now, check what was left behind, restart; the restart is checked later."""
        mark = (records(self.dir, "start") or [None])[-1]
        self.group.kill(self.neuron)
        self.kills += 1
        if self.role == "miner":
            left = checkpoint_left_behind(self.dir)
            assert left is None or left.epoch >= 0
        else:
            left = score_store.load(self.dir / SCORES_FILE)  # raises on a torn file
        self.pending, self.kill_at = (mark, left), None
        self.neuron = self.group.start(self.name, self.dir, self.args())

    def restart_checked(self) -> bool:
        """Whether the restart resumed from what the kill left; schedules the next kill then."""
        mark, left = self.pending
        if self.role == "miner":
            starts = records_after(self.dir, "start", mark)
            if not starts:
                return False
            if left is not None:
                assert starts[0]["resumed_epoch"] == left.epoch, (starts[0], left.epoch)
                assert starts[0]["epoch"] >= left.epoch, (starts[0], left.epoch)
        else:
            first_round = (current_run(self.dir, "round") if records_after(self.dir, "start", mark)
                           else [])
            if not first_round:
                return False
            for result in first_round[0]["results"]:
                uid = result["uid"]
                before = (left.scores.get(uid, FLOOR) if left.hotkeys.get(uid) == result["hotkey"]
                          else FLOOR)
                expected = (1 - ALPHA) * before + ALPHA * result["score"]
                assert math.isclose(result["ema"], expected, rel_tol=1e-9), (uid, result, before)
        self.pending = None
        self.schedule()
        return True


def test_miner_and_validator_survive_random_sigkills(tmp_path, zygote):
    rng = random.Random(SEED)
    print(f"soak seed {SEED}, {KILLS} kills per victim")
    options = SwarmOptions(out_dir=tmp_path, miners=2, validators=1, block_time=0.5,
                           neuron_flags=FLAGS)
    prepare_chain(options)
    with ProcessGroup(grace_seconds=20, spawn=zygote.spawn) as group:
        survivor_dir = options.out_dir / "miner1"
        survivor = group.start("miner1", survivor_dir, neuron_args("miner", "miner1", options))
        group.wait_for_file(survivor, PEER_FILE, 180)
        victims = [Victim("miner2", "miner", group, options, rng),
                   Victim("validator1", "validator", group, options, rng, VALIDATOR_FLAGS)]
        wait_until(lambda: [r for r in records(survivor_dir, "epoch") if r["peers"] >= 2], 300,
                   "an outer step of the two-miner swarm", group)
        for victim in victims:
            victim.schedule()
        last_kill = {}

        def soak_step():
            for victim in victims:
                if victim.pending is not None:
                    victim.restart_checked()
                elif victim.kills < KILLS and time.monotonic() >= victim.kill_at:
                    last_kill["survivor"] = records(survivor_dir, "epoch")[-1]
                    victim.kill_and_restart()
            return all(v.kills == KILLS and v.pending is None for v in victims)

        wait_until(soak_step, 90 * KILLS, f"{KILLS} checked kills of each victim", group)
        # The survivor (never killed) steps after the last kill, the restarted miner rejoins and
        # steps, and the restarted validator runs rounds.
        wait_until(lambda: records_after(survivor_dir, "epoch", last_kill["survivor"]), 180,
                   "the survivor to step after the last kill", group)
        wait_until(lambda: current_run(victims[0].dir, "epoch"), 180,
                   "the restarted miner to step", group)
        wait_until(lambda: current_run(victims[1].dir, "round"), 180,
                   "the restarted validator to run a round", group)
