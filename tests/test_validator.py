"""The validator against real miners on loopback: honest, cheating, slow, broken and down.

Every miner is registered on an embedded dev chain and serves its endpoint there; the validator
is a real ``hivetrain validator`` process that probes them with signed requests, recomputes
every answer on its own copy of the swarm model and sets weights on the chain.
"""

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hivetrain.chain import Chain, create_dev_wallet, register_dev
from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import NETUID, SwarmOptions, neuron_args, prepare_chain
from hivetrain.miner.neuron import PEER_FILE
from polling import records, wait_until

FLAGS = ["--model.preset", "tiny", "--data.seq_len", "64", "--train.batch_size", "4",
         "--train.inner_steps", "20", "--train.matchmaking_time", "2",
         "--train.averaging_timeout", "20", "--train.log_every", "5", "--train.eval_batches", "1",
         "--train.checkpoint_every", "0", "--train.lr", "1e-3", "--train.warmup_epochs", "0",
         "--wandb.off"]
VALIDATOR_FLAGS = ["--validator.interval", "4", "--validator.alpha", "0.5",
                   "--validator.timeout", "8", "--validator.weights_every", "5"]
ADVERSARY = str(Path(__file__).with_name("adversarial_miner.py"))
CHEATERS = ("lie_loss", "wrong_grad", "other_model")


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
        time.sleep(12)  # the behaviour under test: slower than --validator.timeout 8
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
def subnet(tmp_path_factory):
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
    with ProcessGroup(grace_seconds=20) as group:
        honest = group.start("miner1", options.out_dir / "miner1",
                             neuron_args("miner", "miner1", options))
        uids["honest"] = group.wait_for_file(honest, PEER_FILE, 180)["uid"]
        cheaters = [group.start(mode, options.out_dir / mode, neuron_args("miner", mode, options),
                                program=(ADVERSARY, mode)) for mode in CHEATERS]
        for mode, neuron in zip(CHEATERS, cheaters):
            uids[mode] = group.wait_for_file(neuron, PEER_FILE, 180)["uid"]
        group.start("validator1", options.out_dir / "validator1",
                    neuron_args("validator", "validator1", options, VALIDATOR_FLAGS))
        yield group, options, uids
    junk.shutdown()
    slow.shutdown()


def test_scores_follow_the_rule(subnet):
    """Cheaters always score 0.3 and absent miners 0.1; the honest miner scores 1.0.

    The tiny test swarm steps every few seconds, so an honest answer can straddle an epoch
    boundary (a failed averaging round, hivemind's catch-up relabelling) and score 0.3 once in a
    while; docs/validation.md explains why. The honest miner must win at least 3 of 4 rounds.
    """
    group, options, uids = subnet
    validator_dir = options.out_dir / "validator1"
    history = wait_until(lambda: (lambda r: r if len(r) >= 6 and r[-6]["epoch"] >= 2 else None)(
        rounds(validator_dir)), 500, "six validator rounds at epoch 2 or later", group)[-6:]
    by_name = {name: [{r["uid"]: r for r in round_["results"]}[uid] for round_ in history]
               for name, uid in uids.items()}
    print(json.dumps({name: [(r["score"], r["reason"]) for r in results]
                      for name, results in by_name.items()}, indent=1))
    honest_wins = sum(r["score"] == 1.0 for r in by_name["honest"])
    assert honest_wins >= 0.75 * len(history), by_name["honest"]
    for cheater in CHEATERS:
        assert all(r["score"] == 0.3 for r in by_name[cheater]), (cheater, by_name[cheater])
    for absent in ("down", "junk", "slow"):
        assert all(r["score"] == 0.1 for r in by_name[absent]), (absent, by_name[absent])
    ema = {name: results[-1]["ema"] for name, results in by_name.items()}
    assert ema["honest"] > max(ema[c] for c in CHEATERS) > max(ema[a] for a in ("down", "junk", "slow"))


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
    assert min(row[uids[c]] for c in CHEATERS) > max(row[uids[a]] for a in ("down", "junk", "slow"))


def test_status_json_lists_every_peer_and_score(subnet):
    group, options, uids = subnet
    flags = [f for f in FLAGS if f != "--wandb.off"]
    result = subprocess.run(
        [sys.executable, "-m", "hivetrain", "status", "--json", "--netuid", str(NETUID),
         "--subtensor.network", "embedded", "--chain.path", str(options.chain_path),
         "--dht.host_ip", "127.0.0.1", *flags], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    facts = json.loads(result.stdout)
    miners = [n for n in facts["neurons"] if n["uid"] in {uids[k] for k in ("honest", *CHEATERS)}]
    assert all(n["status"] and n["status"]["epoch"] >= 1 for n in miners)
    assert facts["peers_online"] >= 4 and facts["global_epoch"] >= 2
    weights = {n["uid"]: n["weight"] for n in facts["neurons"]}
    assert weights[uids["honest"]] == max(weights.values()) > 0
    assert {n["uid"] for n in facts["neurons"]} >= set(uids.values())
