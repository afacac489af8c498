"""The validator against real miners on loopback: honest, cheating, slow, broken and down.

Every miner is registered on an embedded dev chain and serves its endpoint there; the validator
is a real ``hivetrain validator`` process that probes them with signed requests, recomputes
every answer on its own copy of the swarm model and sets weights on the chain.
"""

import json
import math
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hivetrain.chain import Chain, create_dev_wallet, register_dev
from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import NETUID, SwarmOptions, neuron_args, prepare_chain
from hivetrain.miner.neuron import PEER_FILE
from helpers.cli import run_commands
from helpers.flags import VALIDATOR_TEST_FLAGS
from helpers.polling import records, wait_until

FLAGS = VALIDATOR_TEST_FLAGS
# Every round waits out the slow endpoint's timeout: it sets the round length (about 8 s).
VALIDATOR_FLAGS = ["--validator.interval", "1", "--validator.alpha", "0.5",
                   "--validator.timeout", "5", "--validator.weights_every", "5"]
ADVERSARY = str(Path(__file__).parent / "helpers" / "adversarial_miner.py")
CHEATERS = ("lie_loss", "wrong_grad", "other_model")
# `make test` judges the rule over a few rounds (one miss of the honest miner allowed);
# `make test-slow` measures the honest rate (>= 95 %) over 20 rounds, one miss allowed, and
# HIVETRAIN_TEST_ROUNDS=60 over more (docs/validation.md).
RULE_ROUNDS = 5
RATE_ROUNDS = int(os.environ.get("HIVETRAIN_TEST_ROUNDS", "20"))


class Junk(BaseHTTPRequestHandler):
    """Answers every probe with 200 and a body that is not a probe answer."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"loss": "low", "epoch": -1}')
        except (BrokenPipeError, ConnectionResetError):
            pass  # the validator gave up waiting, as it should

    def log_message(self, *args):
        pass


class Slow(Junk):
    """Holds every probe longer than the validator's timeout before answering."""

    def do_POST(self):
        time.sleep(7)  # the behaviour under test: slower than --validator.timeout 5
        super().do_POST()


def serve_http(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def register_endpoint(options, name, port):
    """A registered hotkey whose served endpoint is ``127.0.0.1:port`` (no miner process)."""
    wallet = create_dev_wallet(name, "default", str(options.wallet_path))
    register_dev(options.chain_path, NETUID, wallet)
    chain = Chain.open("embedded", chain_path=str(options.chain_path), netuid=NETUID, wallet=wallet)
    try:
        assert chain.serve("127.0.0.1", port)
        return chain.uid
    finally:
        chain.close()


def rounds(run_dir):
    return records(run_dir, "round")


@pytest.fixture(scope="module")
def subnet(tmp_path_factory, zygote):
    options = SwarmOptions(out_dir=tmp_path_factory.mktemp("subnet"), miners=1, validators=1,
                           block_time=0.5, neuron_flags=FLAGS)
    prepare_chain(options)
    junk, slow = serve_http(Junk), serve_http(Slow)
    uids = {"down": register_endpoint(options, "down", 1),
            "junk": register_endpoint(options, "junk", junk.server_address[1]),
            "slow": register_endpoint(options, "slow", slow.server_address[1])}
    for mode in CHEATERS:
        register_dev(options.chain_path, NETUID,
                     create_dev_wallet(mode, "default", str(options.wallet_path)))
    with ProcessGroup(grace_seconds=20, spawn=zygote.spawn) as group:
        honest = group.start("miner1", options.out_dir / "miner1",
                             neuron_args("miner", "miner1", options))
        uids["honest"] = group.wait_for_file(honest, PEER_FILE, 180)["uid"]
        cheaters = [group.start(mode, options.out_dir / mode, neuron_args("miner", mode, options),
                                program=(ADVERSARY, mode)) for mode in CHEATERS]
        # The validator starts beside the cheaters: the rounds that count begin once every miner
        # answers (serving_rounds), so it need not wait for them to serve first.
        group.start("validator1", options.out_dir / "validator1",
                    neuron_args("validator", "validator1", options, VALIDATOR_FLAGS))
        for mode, neuron in zip(CHEATERS, cheaters):
            uids[mode] = group.wait_for_file(neuron, PEER_FILE, 180)["uid"]
        yield group, options, uids
        group.kill_all()  # a clean stop is tested on its own (test_stop, test_localnet)
    junk.shutdown()
    slow.shutdown()


def serving_rounds(validator_dir, miner_uids, count):
    """The first ``count`` rounds from the first one at swarm epoch 2 or later in which every
    miner in ``miner_uids`` answered; None until the validator has run that many."""
    history = rounds(validator_dir)
    for start, round_ in enumerate(history):
        answered = {r["uid"] for r in round_["results"] if r["responded"]}
        if round_["epoch"] >= 2 and set(miner_uids) <= answered:
            serving = history[start:start + count]
            return serving if len(serving) == count else None
    return None


def judged(subnet, count):
    """``name -> its results`` over ``count`` validator rounds once every miner serves."""
    group, options, uids = subnet
    validator_dir = options.out_dir / "validator1"
    miners = [uids[m] for m in ("honest", *CHEATERS)]
    history = wait_until(lambda: serving_rounds(validator_dir, miners, count), 180 + 15 * count,
                         f"{count} validator rounds once every miner serves", group)
    by_name = {name: [{r["uid"]: r for r in round_["results"]}[uid] for round_ in history]
               for name, uid in uids.items()}
    print(json.dumps({name: [(r["epoch"], r["score"], r["reason"], r.get("param_digest"),
                              r.get("reference_digest")) for r in results]
                      for name, results in by_name.items()}, indent=1))
    return by_name


def scores_follow_the_rule(subnet, count, honest_wins_needed):
    """Over ``count`` rounds once every miner serves: the honest miner scores 1.0 in at least
    ``honest_wins_needed`` of them, every cheater 0.3 and every absent miner 0.1 in all of them, and the
    EMA ranks them in that order.

    The validator recomputes every answer at the epoch the miner reports, so an honest answer
    fails only when the validator could not fetch that epoch in time.
    """
    by_name = judged(subnet, count)
    honest_wins = sum(r["score"] == 1.0 for r in by_name["honest"])
    assert honest_wins >= honest_wins_needed, by_name["honest"]
    for cheater in CHEATERS:
        assert all(r["score"] == 0.3 for r in by_name[cheater]), (cheater, by_name[cheater])
    for absent in ("down", "junk", "slow"):
        assert all(r["score"] == 0.1 for r in by_name[absent]), (absent, by_name[absent])
    ema = {name: results[-1]["ema"] for name, results in by_name.items()}
    assert ema["honest"] > max(ema[c] for c in CHEATERS) > max(ema[a] for a in ("down", "junk", "slow"))


def test_scores_follow_the_rule(subnet):
    """The rule over RULE_ROUNDS rounds, one honest miss allowed."""
    scores_follow_the_rule(subnet, RULE_ROUNDS, RULE_ROUNDS - 1)


@pytest.mark.slow
def test_the_honest_miner_is_accepted_in_95_percent_of_rounds(subnet):
    """The agreement rate of issue 13, with the whole rule, over RATE_ROUNDS rounds of the same
    subnet (docs/validation.md gives the measured rate)."""
    scores_follow_the_rule(subnet, RATE_ROUNDS, math.ceil(RATE_ROUNDS * 95 / 100))


def test_weights_on_chain_rank_the_honest_miner_first(subnet):
    group, options, uids = subnet
    chain = Chain.open("embedded", chain_path=str(options.chain_path), netuid=NETUID)
    try:
        metagraph = chain.metagraph(refresh=True)
        validator_uid = next(uid for uid in metagraph.uids if metagraph.validator_permit[uid])

        def honest_on_top():
            row = chain.weights().get(validator_uid, {})
            return row if row and max(row, key=row.get) == uids["honest"] else None

        row = wait_until(honest_on_top, 120, "weights that rank the honest miner first", group)
    finally:
        chain.close()
    assert row[uids["honest"]] > max(row[uids[c]] for c in CHEATERS)
    # Absent miners have no verified contribution: weight 0, which the chain leaves out of the row.
    assert min(row[uids[c]] for c in CHEATERS) > max(row.get(uids[a], 0.0)
                                                     for a in ("down", "junk", "slow"))


def test_status_json_lists_every_peer_and_score(subnet, zygote):
    """No training flag is given: the run comes from the chain (tests/test_swarm.py checks status
    given the flags of another run too)."""
    group, options, uids = subnet
    result, = run_commands(zygote, options, [("status", "--json")], timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    facts = json.loads(result.stdout)
    assert facts["run_id_from"].startswith("the chain")
    assert not facts["warnings"] and "warning" not in result.stderr
    miners = [n for n in facts["neurons"] if n["uid"] in {uids[k] for k in ("honest", *CHEATERS)}]
    assert all(n["status"] and n["status"]["epoch"] >= 1 for n in miners)
    assert facts["peers_online"] >= 4 and facts["global_epoch"] >= 2
    weights = {n["uid"]: n["weight"] for n in facts["neurons"]}
    assert weights[uids["honest"]] == max(weights.values()) > 0
    assert {n["uid"] for n in facts["neurons"]} >= set(uids.values())
