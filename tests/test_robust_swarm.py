"""Real miner processes on an embedded chain, three honest and one attacker per case.

The attacker is ``tests/helpers/swarm_attacker.py``: the project's own miner with one thing
changed (what it sends into the all-reduce, what it returns as a reducer, or the state it serves).
Each case waits for the facts it is about, read from the miners' own epoch records and logs: the
epoch at which every honest miner has excluded the attacker (or, for the state attacks, the state
a late joiner loaded), and a later epoch at which every honest miner holds the same finite model
without it; for the progress attack, a validator round that accepts every honest miner. These
cases are the soak matrix of ``make test-slow`` (all of them: at four miner processes each they
are too heavy for ``make test`` on two cores; ``tests/test_robust_averaging.py`` runs every
attack there, on real hivemind peers in one process).
"""

import json
import math
import re
from pathlib import Path

import pytest

from hivetrain.chain import create_dev_wallet, register_dev
from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import NETUID, SwarmOptions, neuron_args, prepare_chain
from hivetrain.miner.neuron import PEER_FILE
from helpers.flags import VALIDATOR_TEST_FLAGS
from helpers.polling import records, wait_until

FLAGS = [*VALIDATOR_TEST_FLAGS, "--train.grad_compression", "none"]
ATTACKER = str(Path(__file__).parent / "helpers" / "swarm_attacker.py")
HONEST = ("miner1", "miner2", "miner3")
SAME_MODEL = 1e-6
# Epochs after the attacker's first round in which every honest miner must have excluded it.
EXCLUDED_WITHIN = 2
# Attacks a validator watches too: it must score the attacker 0.3 for its exclusion, however
# clean the attacker's probe answers and published updates are.
VALIDATED = ("nan",)


def prepare_attacked_chain(options, registered=True):
    """The dev chain with the honest miners registered, and the attacker's wallet (registered
    on the subnet unless ``registered`` is False)."""
    prepare_chain(options)
    wallet = create_dev_wallet("attacker", "default", str(options.wallet_path))
    if registered:
        register_dev(options.chain_path, NETUID, wallet)


def start_miner(group, options, name, mode=None):
    """Start miner ``name``: the project's miner, or the attacker in ``mode``."""
    program = {} if mode is None else {"program": (ATTACKER, mode)}
    return group.start(name, options.out_dir / name, neuron_args("miner", name, options),
                       **program)


def start_swarm(group, options, mode):
    """Three honest miners, then the attacker; returns the attacker's DHT peer id."""
    group.wait_for_file(start_miner(group, options, "miner1"), PEER_FILE, 180)
    for name in HONEST[1:]:
        start_miner(group, options, name)
    start_miner(group, options, "attacker", mode)
    for neuron in group.neurons:
        group.wait_for_file(neuron, PEER_FILE, 180)
    return json.loads((options.out_dir / "attacker" / PEER_FILE).read_text())["peer_id"]


def epochs(options, name):
    return {r["epoch"]: r for r in records(options.out_dir / name, "epoch")}


def honest_models_agree(options, after, without=None):
    """The first epoch after ``after`` that every honest miner reached with the same finite
    model, in a group without the peer ``without`` (any group when it is None: a state attacker
    averages honestly); None until there is one."""
    seen = [epochs(options, name) for name in HONEST]
    common = sorted(set.intersection(*(set(s) for s in seen)))
    for epoch in (e for e in common if e > after):
        rows = [s[epoch] for s in seen]
        sketches = [r["sketch"] for r in rows]
        if any(without is not None and without in r["group"] for r in rows) or not all(
                math.isfinite(x) for s in sketches for x in s):
            continue
        if all(max(abs(a - b) for a, b in zip(sketches[0], s)) < SAME_MODEL for s in sketches):
            return epoch
    return None


def first_averaged(options, name):
    """The first epoch ``name`` ended in an all-reduce with others (its ``group`` is set)."""
    return min((e for e, r in epochs(options, name).items() if r["group"]), default=None)


def excluded_at(options, attacker_id):
    """The epoch by which every honest miner had banned the attacker, or None."""
    first = []
    for name in HONEST:
        banned = [e for e, r in sorted(epochs(options, name).items()) if attacker_id in r["banned"]]
        if not banned:
            return None
        first.append(banned[0])
    return max(first)


def start_validator(group, options):
    return group.start("validator1", options.out_dir / "validator1",
                       neuron_args("validator", "validator1", options,
                                   ["--validator.interval", "1", "--validator.timeout", "5"]))


@pytest.fixture
def attacked_swarm(request, tmp_path, zygote):
    """Three honest miners and the attacker; for the modes in ``VALIDATED`` a validator too."""
    validated = request.param in VALIDATED
    options = SwarmOptions(out_dir=tmp_path, miners=3, validators=int(validated), block_time=0.5,
                           neuron_flags=FLAGS)
    prepare_attacked_chain(options)
    with ProcessGroup(grace_seconds=20, spawn=zygote.spawn) as group:
        attacker_id = start_swarm(group, options, request.param)
        if validated:
            start_validator(group, options)
        yield request.param, group, options, attacker_id


def check_exclusion(attacked_swarm):
    mode, group, options, attacker_id = attacked_swarm
    joined = wait_until(lambda: first_averaged(options, "attacker"), 300,
                        "the attacker's first all-reduce with the swarm", group)
    excluded = wait_until(lambda: excluded_at(options, attacker_id), 300,
                          "every honest miner to exclude the attacker", group)
    clean = wait_until(lambda: honest_models_agree(options, excluded, without=attacker_id), 300,
                       "an epoch where the honest miners hold one finite model without it", group)
    print(f"{mode}: attacker first averaged at epoch {joined}, excluded by every honest miner "
          f"at epoch {excluded}, honest miners agree at epoch {clean}")
    assert excluded - joined <= EXCLUDED_WITHIN, (joined, excluded)
    return excluded


def excluded_round(options, attacker_uid, after):
    """The first validator round at an epoch after ``after`` that scored the attacker for its
    exclusion; None until there is one."""
    for round_ in records(options.out_dir / "validator1", "round"):
        results = {r["uid"]: r for r in round_["results"]}
        attacker = results.get(attacker_uid)
        if round_["epoch"] > after and attacker and "excluded from the all-reduce" in attacker["reason"]:
            return round_
    return None


@pytest.mark.slow
@pytest.mark.parametrize("attacked_swarm", ["nan"], indirect=True)
def test_a_nan_sender_is_excluded_and_the_honest_model_stays_finite(attacked_swarm):
    excluded = check_exclusion(attacked_swarm)
    _, group, options, attacker_id = attacked_swarm
    attacker_uid = json.loads((options.out_dir / "attacker" / PEER_FILE).read_text())["uid"]
    round_ = wait_until(lambda: excluded_round(options, attacker_uid, excluded), 300,
                        "a validator round that scores the attacker for its exclusion", group)
    results = {r["uid"]: r for r in round_["results"]}
    print({uid: (r["score"], r["reason"]) for uid, r in results.items()})
    assert results[attacker_uid]["score"] == 0.3
    honest = [r for uid, r in results.items() if uid != attacker_uid]
    assert len(honest) == len(HONEST)
    assert not any("excluded" in r["reason"] for r in honest), honest


@pytest.mark.slow
@pytest.mark.parametrize("attacked_swarm", ["inf", "scaled", "sign_flip", "inflated_samples",
                                            "bad_reduce"], indirect=True)
def test_every_averaging_attacker_is_excluded(attacked_swarm):
    check_exclusion(attacked_swarm)


def neuron_log(options, name):
    return (options.out_dir / name / "neuron.log").read_text(errors="replace")


def loaded_from(options, name):
    """The peer ids ``name`` loaded the global state from, in order (its log's own words)."""
    return re.findall(r"loaded the global state of epoch \d+ from (\S+)", neuron_log(options, name))


def rejections(options, name, peer):
    """Why ``name`` rejected the states ``peer`` sent (its log's own words)."""
    return re.findall(rf"rejected the global state from {re.escape(peer)}: ([^;]*)",
                      neuron_log(options, name))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["poison_state", "initial_state", "stale_state", "unregistered"])
def test_a_late_joiner_never_loads_the_loudest_poisoned_state(mode, tmp_path, zygote):
    """The attacker advertises state-sharing priority 1e12 and serves NaN weights labelled 50
    epochs ahead (registered, or not registered at all), the initial weights at its epoch, or its
    first state labelled one epoch ahead; a miner joining after it must load the honest swarm's
    state and train on with it."""
    options = SwarmOptions(out_dir=tmp_path, miners=3, validators=0, block_time=0.5,
                           neuron_flags=FLAGS)
    prepare_attacked_chain(options, registered=mode != "unregistered")
    with ProcessGroup(grace_seconds=20, spawn=zygote.spawn) as group:
        for name in HONEST[:2]:
            group.wait_for_file(start_miner(group, options, name), PEER_FILE, 180)
        attacker = start_miner(group, options, "attacker", mode)
        attacker_id = group.wait_for_file(attacker, PEER_FILE, 180)["peer_id"]
        # Its first epoch record: it has stepped, so it is serving its state at priority 1e12.
        wait_until(lambda: records(options.out_dir / "attacker", "epoch"), 300,
                   "the attacker's first epoch", group)
        group.wait_for_file(start_miner(group, options, HONEST[2]), PEER_FILE, 180)
        sources = wait_until(lambda: loaded_from(options, HONEST[2]), 300,
                             "the late joiner to load the global state", group)
        joined = wait_until(lambda: records(options.out_dir / HONEST[2], "epoch"), 300,
                            "the late joiner's first epoch", group)[0]["epoch"]
        clean = wait_until(lambda: honest_models_agree(options, joined), 300,
                           "an epoch where the honest miners hold one finite model", group)
        print(f"{mode}: the late joiner loaded from {sources} (attacker {attacker_id}), first "
              f"epoch {joined}, honest miners agree at epoch {clean}; it said of the attacker: "
              f"{rejections(options, HONEST[2], attacker_id)}")
        assert attacker_id not in sources


FAKE_EPOCHS = 50  # swarm_attacker.FAKE_EPOCHS: what fake_progress adds to every epoch it reports


@pytest.mark.slow
def test_a_fake_epoch_and_sample_report_moves_neither_the_swarm_nor_the_validator(tmp_path, zygote):
    """The attacker trains honestly but reports 50 epochs more than it reached, and a million
    times its samples and rate, in every progress record; the honest miners must keep their own
    epochs and the validator must keep judging them at the swarm's real one."""
    options = SwarmOptions(out_dir=tmp_path, miners=3, validators=1, block_time=0.5,
                           neuron_flags=FLAGS)
    prepare_attacked_chain(options)
    with ProcessGroup(grace_seconds=20, spawn=zygote.spawn) as group:
        start_swarm(group, options, "fake_progress")
        start_validator(group, options)
        attacker = options.out_dir / "attacker"
        attacker_uid = json.loads((attacker / PEER_FILE).read_text())["uid"]
        # Its first epoch record: its reports have claimed FAKE_EPOCHS more since then.
        lied_at = wait_until(lambda: records(attacker, "epoch"), 300,
                             "the attacker's first epoch", group)[0]["epoch"]

        def honest_accepted_later():
            for round_ in records(options.out_dir / "validator1", "round"):
                results = {r["uid"]: r for r in round_["results"] if r["uid"] != attacker_uid}
                if round_["epoch"] >= lied_at + 3 and len(results) == len(HONEST) \
                        and all(r["score"] == 1.0 for r in results.values()):
                    return round_
            return None

        accepted = wait_until(honest_accepted_later, 400, "a validator round three epochs after "
                              "the lie began that accepts every honest miner", group)
    honest_epochs = {name: sorted(epochs(options, name)) for name in HONEST}
    rounds = [r["epoch"] for r in records(options.out_dir / "validator1", "round")]
    print(f"fake_progress: lies from epoch {lied_at}; validator round at epoch {accepted['epoch']} "
          f"accepts every honest miner; validator epochs {min(rounds)}-{max(rounds)}, honest "
          f"miners' last epochs {[e[-1] for e in honest_epochs.values()]}")
    reached = max(e[-1] for e in honest_epochs.values())
    assert reached < lied_at + FAKE_EPOCHS, honest_epochs
    # One epoch of slack: a miner serves an epoch's state a moment before it logs the epoch.
    assert max(rounds) <= reached + 1, (rounds, reached)
