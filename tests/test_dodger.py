"""A miner cannot train only the epochs it expects to be checked in: real processes.

Embedded dev chain, real hivemind peers, real HTTP: one honest ``hivetrain miner``, one real
miner changed in one way (tests/helpers/adversarial_miner.py ``dodger``) and a validator whose
budget checks one miner per epoch (a rotation of two groups). The dodger knows the validator's
hotkey and the miners' uids, so it knows which group it is in; it trains only the epochs that
a rotation by epoch number (``e mod cycle``, the rule before this test) would check it in, and
takes no inner steps in the others. The validator draws each epoch's group from the checking
round's block hash (validator/rotation.py), so the dodger is checked in epochs it skipped too.
The test waits for that fact: a verdict on the dodger's update of an epoch it did not train.
"""

import json
from pathlib import Path

import pytest

from hivetrain.chain import create_dev_wallet, register_dev
from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import NETUID, SwarmOptions, neuron_args, prepare_chain
from hivetrain.miner.neuron import PEER_FILE
from hivetrain.validator import rotation
from helpers.flags import VALIDATOR_TEST_FLAGS
from helpers.polling import records, wait_until

CYCLE = 2  # two served miners, one checked per epoch
# A budget no check fits: after its first (which covers up to 8 miners) the validator checks
# one miner per epoch.
VALIDATOR_FLAGS = ["--validator.interval", "2", "--validator.alpha", "0.3",
                   "--validator.timeout", "8", "--validator.weights_every", "5",
                   "--validator.update_budget", "0.01"]
ADVERSARY = str(Path(__file__).parent / "helpers" / "adversarial_miner.py")


def verdicts(run_dir, uid):
    """``checked epoch -> the update check's record`` of ``uid`` (its verdict on that epoch),
    with the reason of the first round that carried it."""
    found = {}
    for record in records(run_dir, "round"):
        for result in record["results"]:
            update = result.get("update")
            if result["uid"] == uid and update and update.get("checked_epoch") is not None:
                found.setdefault(update["checked_epoch"], {**update, "reason": result["reason"]})
    return found


def skipped_and_judged(run_dir, uid, phase):
    """The verdicts on ``uid``'s updates of epochs it skipped, made by checks that split the
    miners into ``CYCLE`` groups (the first check covers everyone: it proves nothing here)."""
    split = {c["epoch"] for c in records(run_dir, "update_check")
             if c["cycle"] == CYCLE and uid in c["checked_uids"] and c["epoch"] % CYCLE != phase}
    judged = {e: v for e, v in verdicts(run_dir, uid).items()
              if e in split and v["score"] is not None}
    return judged or None


def test_a_miner_that_trains_only_when_it_expects_a_check_is_caught(tmp_path, zygote):
    options = SwarmOptions(out_dir=tmp_path, miners=1, validators=1, block_time=0.5,
                           neuron_flags=VALIDATOR_TEST_FLAGS)
    prepare_chain(options)
    dodger_uid = register_dev(options.chain_path, NETUID,
                              create_dev_wallet("dodger", "default", str(options.wallet_path)))
    validator_hotkey = create_dev_wallet("validator1", "default",
                                         str(options.wallet_path)).hotkey.ss58_address
    honest_uid = register_dev(options.chain_path, NETUID,
                              create_dev_wallet("miner1", "default", str(options.wallet_path)))
    # The dodger's group under the old rule: epoch e checked group e mod CYCLE.
    phase = rotation.order([honest_uid, dodger_uid], validator_hotkey).index(dodger_uid) % CYCLE
    validator_dir = tmp_path / "validator1"
    with ProcessGroup(grace_seconds=20, spawn=zygote.spawn) as group, \
            pytest.MonkeyPatch.context() as env:
        env.setenv("HIVETRAIN_DODGE_CYCLE", str(CYCLE))
        env.setenv("HIVETRAIN_DODGE_PHASE", str(phase))
        honest = group.start("miner1", tmp_path / "miner1", neuron_args("miner", "miner1", options))
        group.wait_for_file(honest, PEER_FILE, 180)
        group.start("dodger", tmp_path / "dodger", neuron_args("miner", "dodger", options),
                    program=(ADVERSARY, "dodger"))
        group.start("validator1", validator_dir,
                    neuron_args("validator", "validator1", options, VALIDATOR_FLAGS))

        wait_until(lambda: skipped_and_judged(validator_dir, dodger_uid, phase), 540,
                   "a verdict, in the two-group rotation, on an epoch the dodger skipped", group)
        dodger, honest_verdicts = verdicts(validator_dir, dodger_uid), verdicts(validator_dir,
                                                                               honest_uid)
        group.kill_all()  # a clean stop is tested on its own (test_stop, test_localnet)
    checks = records(validator_dir, "update_check")
    print(json.dumps({"phase": phase,
                      "checks": [{k: c[k] for k in ("epoch", "cycle", "phase", "checked_uids")}
                                 for c in checks],
                      "dodger": {e: (v["score"], v["assigned_gain"], v["reason"])
                                 for e, v in sorted(dodger.items())},
                      "honest": {e: (v["score"], v["assigned_gain"], v["reason"])
                                 for e, v in sorted(honest_verdicts.items())}}, indent=1))
    skipped = {e: v for e, v in dodger.items() if e % CYCLE != phase and v["score"] is not None}
    assert all(v["score"] <= 0.3 for v in skipped.values()), skipped
