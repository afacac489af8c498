"""Proof of training against real processes: an honest miner and six that do not train honestly.

Embedded dev chain, real hivemind peers, real HTTP: one honest ``hivetrain miner``, and real
miners changed in one way each (tests/helpers/adversarial_miner.py): a freeloader, a copier
(serves the honest miner's update, fetched with a colluding validator's permit), a wrong-data
trainer, a lazy miner (one step in ten, full sample claim), a stale one (its oldest update,
relabelled) and a proxy (forwards every probe and update request to the honest miner and serves
its answers, re-signed, as its own). A real validator checks every miner's update each epoch. The test waits for round
records of checked epochs (facts), never for a count of seconds.
"""

import json
import os
from pathlib import Path

import pytest

from hivetrain.chain import create_dev_wallet, register_dev, stake_dev
from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import NETUID, SwarmOptions, neuron_args, prepare_chain
from hivetrain.miner.neuron import PEER_FILE
from helpers.flags import VALIDATOR_TEST_FLAGS
from helpers.polling import records, wait_until

FLAGS = VALIDATOR_TEST_FLAGS
VALIDATOR_FLAGS = ["--validator.interval", "2", "--validator.alpha", "0.3",
                   "--validator.timeout", "8", "--validator.weights_every", "5"]
ADVERSARY = str(Path(__file__).parent / "helpers" / "adversarial_miner.py")
ADVERSARIES = ("freeloader", "copier", "wrong_data", "lazy", "stale", "proxy")
# `make test` checks the rule over 4 checked epochs, `make test-slow` over 8, and
# docs/validation.md's figures come from a longer run (HIVETRAIN_POT_ROUNDS=30).
RULE_EPOCHS = 4
RATE_EPOCHS = int(os.environ.get("HIVETRAIN_POT_ROUNDS", "8"))
# The adversaries join a run past its first epochs, as they would join a live subnet. In a run's
# first epochs any training on the train split lowers its loss far more than held-out loss
# (gains of 0.4-1.5 nats a round), so a miner trained on another hotkey's shards beats the
# held-out ("random") data by up to 0.22 there, over min_gap (0.08): with every miner starting at
# epoch 0, wrong_data passed 2 of its first 4 checked epochs in one run, 1 in another
# (docs/validation.md, known limits).
JOIN_AT_EPOCH = 4
# Epochs not judged after every miner first answered and the honest miner first counted all of
# them: a miner's first epochs after it joins. There `lazy` (one step in ten) gained 0.125 and
# 0.124 on its assigned data (honest: 0.45 and 0.43), over min_assigned_gain 0.1, and passed; in
# its next two, 0.039 and 0.043 (a fresh-clone make test, 2026-12-06; docs/validation.md, known
# limits). Since joiners read the swarm's epoch within 1-4 s (3fb8770) they answer from the
# validator's first round, while the seven miners still form one swarm: in a loaded fresh clone
# the swarm left the honest miner behind twice before it counted all seven, at epoch 10.
SETTLE_EPOCHS = 2


@pytest.fixture(scope="module")
def subnet(tmp_path_factory, zygote):
    options = SwarmOptions(out_dir=tmp_path_factory.mktemp("pot"), miners=1, validators=1,
                           block_time=0.5, neuron_flags=FLAGS)
    prepare_chain(options)
    wallets = str(options.wallet_path)
    colluder = create_dev_wallet("colluder", "default", wallets)
    register_dev(options.chain_path, NETUID, colluder)
    stake_dev(options.chain_path, NETUID, colluder.hotkey.ss58_address, 10.0, permit=True)
    for mode in ADVERSARIES:
        register_dev(options.chain_path, NETUID, create_dev_wallet(mode, "default", wallets))
    with ProcessGroup(grace_seconds=20, spawn=zygote.spawn) as group, \
            pytest.MonkeyPatch.context() as env:
        honest = group.start("miner1", options.out_dir / "miner1",
                             neuron_args("miner", "miner1", options))
        peer = group.wait_for_file(honest, PEER_FILE, 180)
        wait_until(lambda: [r for r in records(options.out_dir / "miner1", "epoch")
                            if r["epoch"] >= JOIN_AT_EPOCH], 180,
                   f"the honest miner's epoch {JOIN_AT_EPOCH}", group)
        uids = {"honest": peer["uid"]}
        env.setenv("HIVETRAIN_COPY_FROM", peer["hotkey"])
        env.setenv("HIVETRAIN_COPY_AT", f"127.0.0.1:{peer['api_port']}")
        env.setenv("HIVETRAIN_COLLUDER", f"{wallets}:colluder")
        neurons = {mode: group.start(mode, options.out_dir / mode,
                                     neuron_args("miner", mode, options), program=(ADVERSARY, mode))
                   for mode in ADVERSARIES}
        group.start("validator1", options.out_dir / "validator1",
                    neuron_args("validator", "validator1", options, VALIDATOR_FLAGS))
        for mode, neuron in neurons.items():
            uids[mode] = group.wait_for_file(neuron, PEER_FILE, 180)["uid"]
        yield group, options, uids
        group.kill_all()  # a clean stop is tested on its own (test_stop, test_localnet)


def checked_rounds(run_dir, uids, honest_dir):
    """One round record per checked epoch (its first), from the :data:`SETTLE_EPOCHS`-th epoch
    after every miner answered a probe and the honest miner (``honest_dir``) closed an epoch
    counting every miner (an epoch before that one has miners that never trained it).

    A validator round that finds no newer epoch reports the same epoch's verdicts again (the
    same gains, to the digit, in the records). Counted per round, one event weighed twice: in a
    run of this module alone the honest miner, left behind once while the six adversaries
    joined (docs/validation.md, known limits), had "no update for epoch 5" in 2 of 4 rounds."""
    rounds = records(run_dir, "round")
    up = next((i for i, r in enumerate(rounds) if all(
        x["responded"] for x in r["results"] if x["uid"] in uids.values())), None)
    formed = next((r["epoch"] for r in records(honest_dir, "epoch") if r["peers"] >= len(uids)),
                  None)
    if up is None or formed is None:
        return []
    first = max(rounds[up]["epoch"], formed) + SETTLE_EPOCHS
    first_of_each = {}
    for r in rounds[up:]:
        if r.get("checked_epoch") is not None and r["checked_epoch"] >= first:
            first_of_each.setdefault(r["checked_epoch"], r)
    return list(first_of_each.values())


def test_only_the_honest_miner_is_paid_for_training(subnet):
    only_the_honest_miner_is_paid(subnet, RULE_EPOCHS)


@pytest.mark.slow
def test_only_the_honest_miner_is_paid_over_more_rounds(subnet):
    only_the_honest_miner_is_paid(subnet, RATE_EPOCHS)


def only_the_honest_miner_is_paid(subnet, epochs):
    """Over the first ``epochs`` checked epochs: the honest miner's updates pass, every adversary
    is caught, and the EMA ranks the honest miner first."""
    group, options, uids = subnet
    validator_dir = options.out_dir / "validator1"

    def first_checked_epochs():
        checked = checked_rounds(validator_dir, uids, options.out_dir / "miner1")
        return checked[:epochs] if len(checked) >= epochs else None

    history = wait_until(first_checked_epochs, 300 + 20 * epochs, f"{epochs} checked epochs", group)
    by_name = {name: [{r["uid"]: r for r in round_["results"]}[uid] for round_ in history]
               for name, uid in uids.items()}
    figures = {name: [(r["score"], (r.get("update") or {}).get("assigned_gain"),
                       (r.get("update") or {}).get("random_gain"),
                       (r.get("update") or {}).get("copy_cosine"), r["reason"][:90])
                      for r in results] for name, results in by_name.items()}
    print(json.dumps(figures, indent=1))
    print(json.dumps(summary(by_name, records(validator_dir, "update_check")), indent=1))
    # Adversaries with no change of their own once refused every honest average as too large
    # and, being the majority, got the honest miner excluded from the all-reduce.
    assert not any("excluded from the all-reduce" in r["reason"] for r in by_name["honest"]), \
        figures["honest"]
    # The honest miner's *update* passes the proof-of-training check. Its round score also has
    # the probe in it, which it fails while the swarm is split: here six of seven miners are
    # adversaries that average among themselves, the validator fetches the G most peers hold,
    # and an honest miner left in a minority group is judged on that G (docs/validation.md,
    # known limits). Measured on a loaded 2-core machine, round scores 7, 6, 5 and 1 of 8; its
    # updates 8, 8 and 6 of 8 (the two misses: gain 0.004, measured on the majority's G_e). The
    # probe's honest rate is test_validator.py's (>= 95 %), in a swarm of trainers.
    updates = [r["update"]["score"] for r in by_name["honest"] if r.get("update")]
    assert updates and sum(s == 1.0 for s in updates) >= 0.6 * len(updates), figures["honest"]
    # Each check is statistical (k batches a side): over 30 rounds every adversary was caught
    # 30 / 30, but wrong_data's gap reached 0.093 once in 8 (min_gap 0.08). One miss in 4 (two
    # in 8) is allowed; the EMA below must still rank every adversary under the honest miner.
    for mode in ADVERSARIES:
        caught = [r["score"] is not None and r["score"] <= 0.3 for r in by_name[mode]]
        assert sum(caught) >= 0.75 * len(caught), (mode, figures[mode])
    ema = {name: results[-1]["ema"] for name, results in by_name.items()}
    assert ema["honest"] > max(ema[m] for m in ADVERSARIES), ema


def summary(by_name, checks):
    """The figures docs/validation.md records: rates, gain ranges, cost per miner per check."""
    def span(values):
        values = [v for v in values if v is not None and v == v]
        return [round(min(values), 3), round(max(values), 3)] if values else None

    table = {}
    for name, results in by_name.items():
        updates = [r.get("update") or {} for r in results]
        table[name] = {
            "rounds": len(results),
            "score_1.0": sum(r["score"] == 1.0 for r in results) / len(results),
            "score_le_0.3": sum(r["score"] is not None and r["score"] <= 0.3
                                for r in results) / len(results),
            "assigned_gain": span([u.get("assigned_gain") for u in updates]),
            "random_gain": span([u.get("random_gain") for u in updates]),
            "gap": span([u["assigned_gain"] - u["random_gain"] for u in updates
                         if u.get("assigned_gain") is not None
                         and u.get("random_gain") is not None]),
            "copy_cosine": span([u.get("copy_cosine") for u in updates]),
            "samples": span([u.get("samples") for u in updates]),
            "caught_by": caught_by(results),
        }
    miners = sum(c["miners"] for c in checks) or 1
    table["cost_per_miner_per_check"] = {
        "checks": len(checks), "seconds": sum(c["seconds"] for c in checks) / miners,
        "fetch_seconds": sum(c["fetch_seconds"] for c in checks) / miners,
        "bytes": sum(c["bytes"] for c in checks) / miners}
    return table


# The first failing check named by a round's reason, for "what caught them" in the docs.
CHECKS = (("assigned gain <", "assigned gain"), ("does not beat random", "assigned-vs-random gap"),
          ("near-copy", "near-copy"), ("announced", "announced digest"),
          ("stale update", "stale"), ("no update for", "no update kept"),
          ("samples but gains", "gain per claimed sample"), ("update:", "update unanswered"),
          ("random gain <", "random gain"), ("gradient cosine", "probe"), ("loss ", "probe"),
          ("epoch ", "probe"), ("no response", "no response"))


def caught_by(results):
    """``check -> rounds`` over the rounds scored <= 0.3, by the first check their reason names."""
    counts = {}
    for r in results:
        if r["score"] is None or r["score"] > 0.3:
            continue
        first = min(((r["reason"].find(text), name) for text, name in CHECKS
                     if text in r["reason"]), default=(0, "other"))[1]
        counts[first] = counts.get(first, 0) + 1
    return counts
