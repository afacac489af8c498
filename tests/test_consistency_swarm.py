"""What a miner publishes must be what it averaged: real processes, one two-faced miner.

Embedded dev chain, real hivemind peers, real HTTP: two honest ``hivetrain miner`` processes and
one real miner changed in one way (tests/helpers/adversarial_miner.py ``two_faced``): it trains
and publishes its update honestly but sends noise of its change's norm into the all-reduce. Its
update passes every check of its own (it lowers the loss on its assigned data) and the noise
passes every reducer bound; only the swarm's outer step, compared with the group's published
updates (validator/consistency.py), shows the lie.
The test waits for the validator's consistency records of judged epochs (facts).
"""

import json
from pathlib import Path

import pytest

from hivetrain.chain import create_dev_wallet, register_dev
from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import NETUID, SwarmOptions, neuron_args, prepare_chain
from hivetrain.miner.neuron import PEER_FILE
from hivetrain.validator.consistency import SHARE_BAND
from helpers.flags import VALIDATOR_TEST_FLAGS
from helpers.polling import records, wait_until

VALIDATOR_FLAGS = ["--validator.interval", "2", "--validator.alpha", "0.3",
                   "--validator.timeout", "8", "--validator.weights_every", "5"]
ADVERSARY = str(Path(__file__).parent / "helpers" / "adversarial_miner.py")
JUDGED_EPOCHS = 4


@pytest.fixture(scope="module")
def subnet(tmp_path_factory, zygote):
    options = SwarmOptions(out_dir=tmp_path_factory.mktemp("consistency"), miners=2,
                           validators=1, block_time=0.5, neuron_flags=VALIDATOR_TEST_FLAGS)
    prepare_chain(options)
    register_dev(options.chain_path, NETUID,
                 create_dev_wallet("two_faced", "default", str(options.wallet_path)))
    with ProcessGroup(grace_seconds=20, spawn=zygote.spawn) as group:
        # The first miner's DHT address, committed on chain, is how the others find the swarm.
        neurons = {"miner1": group.start("miner1", options.out_dir / "miner1",
                                         neuron_args("miner", "miner1", options))}
        group.wait_for_file(neurons["miner1"], PEER_FILE, 180)
        neurons["miner2"] = group.start("miner2", options.out_dir / "miner2",
                                        neuron_args("miner", "miner2", options))
        neurons["two_faced"] = group.start("two_faced", options.out_dir / "two_faced",
                                           neuron_args("miner", "two_faced", options),
                                           program=(ADVERSARY, "two_faced"))
        group.start("validator1", options.out_dir / "validator1",
                    neuron_args("validator", "validator1", options, VALIDATOR_FLAGS))
        uids = {name: group.wait_for_file(n, PEER_FILE, 180)["uid"] for name, n in neurons.items()}
        yield group, options, uids
        group.kill_all()  # a clean stop is tested on its own (test_stop, test_localnet)


def judged(run_dir, uid):
    """The consistency records of epochs that judged ``uid``: not inconclusive, and ``uid`` in
    the checked group without being unjudged there (a member that gave its round up after being
    gathered, the two-faced miner too when it joins late, names no group and is not judged)."""
    return [r for r in records(run_dir, "consistency")
            if r["status"] != "inconclusive" and uid in r["members"]
            and uid not in r["unjudged"]]


def exclusions(run_dir, uid):
    """The validator's notes that the swarm's reducers excluded ``uid`` from the all-reduce."""
    return [x["reason"] for r in records(run_dir, "round") for x in r["results"]
            if x["uid"] == uid and "excluded from the all-reduce" in x["reason"]]


def test_a_miner_that_averages_other_than_it_publishes_is_caught(subnet):
    group, options, uids = subnet
    validator_dir = options.out_dir / "validator1"
    liar = uids["two_faced"]

    def judged_enough():
        # Noise keeps the sender's norm and weight and points nowhere: the reducers must not see
        # it (a sign flip, which they ban once three peers average, let this test wait forever).
        assert not exclusions(validator_dir, liar), exclusions(validator_dir, liar)
        history = judged(validator_dir, liar)
        return history if len({x["epoch"] for x in history}) >= JUDGED_EPOCHS else None

    history = wait_until(judged_enough, 300 + 60 * JUDGED_EPOCHS,
                         f"{JUDGED_EPOCHS} judged epochs with the two-faced miner in the group",
                         group)
    every = records(validator_dir, "consistency")
    print(json.dumps([{k: r[k] for k in ("epoch", "status", "reason", "members", "unjudged",
                                         "residual", "derivation_gap", "shares", "flagged")}
                      for r in every],
                     indent=1))
    low, high = SHARE_BAND
    for record in history:
        assert liar in record["flagged"], record
        assert record["shares"][str(liar)] < low, record
        for name in ("miner1", "miner2"):
            uid = uids[name]
            assert uid not in record["flagged"], (name, record)
            # judged: not a member that gave its round up after being gathered into the group
            if uid in record["members"] and uid not in record["unjudged"]:
                assert low <= record["shares"][str(uid)] <= high, (name, record)
    # The verdict reaches the score: every round judged on a caught epoch scores the liar 0.3.
    caught = {r["epoch"] for r in history}
    rounds = [x for r in records(validator_dir, "round") for x in r["results"]
              if x["uid"] == liar and (x.get("update") or {}).get("checked_epoch") in caught]
    assert rounds and all(x["score"] is not None and x["score"] <= 0.3 for x in rounds), rounds
