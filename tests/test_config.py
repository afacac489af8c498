"""Flags -> typed config, one-line errors, and the run_id fingerprint."""

import argparse
import re
import socket
import subprocess
import sys
import threading

import pytest

from hivetrain.config import (ConfigError, add_config_arguments, check_port_free, config_from_args,
                              fingerprint, run_id, swarm_agreement)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)), role="miner")


def test_defaults_and_dotted_flags():
    cfg = parse("--netuid", "7", "--wallet.name", "cold", "--dht.initial_peers", "/ip4/1.2.3.4/tcp/1/p2p/A",
                "/ip4/5.6.7.8/tcp/2/p2p/B", "--logging.debug", "--train.lr", "3e-4")
    assert cfg.netuid == 7 and cfg.wallet.name == "cold" and cfg.wallet.hotkey == "default"
    assert cfg.dht.initial_peers == ["/ip4/1.2.3.4/tcp/1/p2p/A", "/ip4/5.6.7.8/tcp/2/p2p/B"]
    assert cfg.logging.debug is True and cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.preset == "tiny" and cfg.axon.port == 8091
    assert str(cfg.run_dir).endswith("miner-cold-default")


def test_defaults_are_not_shared_between_configs():
    first = parse()
    first.dht.initial_peers.append("x")
    assert parse().dht.initial_peers == []


@pytest.mark.parametrize("argv, message", [
    (["--train.batch_size", "-1"], "--train.batch_size must be positive, got -1"),
    (["--data.heldout_fraction", "1.5"], "--data.heldout_fraction must be in [0, 1)"),
    (["--axon.port", "70000"], "--axon.port must be a TCP port"),
    (["--subtensor.network", "moon"], "--subtensor.network must be one of"),
    (["--train.device", "tpu"], "--train.device must be auto, cpu, cuda"),
    (["--train.batch_size", "64", "--train.target_batch_size", "8"], "at least --train.batch_size"),
])
def test_bad_values_name_the_flag(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(*argv)


def test_port_in_use_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--dht.port {port} is already in use"):
            check_port_free(port, "--dht.port", wait=0.5)


def test_a_port_released_while_waiting_is_free():
    """A crashed neuron's helpers release its port a moment after it died; the restart waits."""
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen()
    port = holder.getsockname()[1]
    release = threading.Timer(0.5, holder.close)  # the old p2pd exiting
    release.start()
    try:
        check_port_free(port, "--dht.port", wait=30)
    finally:
        release.cancel()
        holder.close()


@pytest.mark.parametrize("argv, expected", [
    (["miner", "--train.batch_size", "-1"], "error: --train.batch_size must be positive"),
    (["miner", "--model.preset", "huge"], "invalid choice: 'huge'"),
    (["miner", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_cli_errors_are_one_line_without_traceback(argv, expected):
    result = subprocess.run([sys.executable, "-m", "hivetrain", *argv], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_help_documents_every_flag_with_its_default():
    result = subprocess.run([sys.executable, "-m", "hivetrain", "miner", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in ("--netuid", "--wallet.name", "--wallet.hotkey", "--wallet.path", "--subtensor.network",
                 "--subtensor.chain_endpoint", "--axon.port", "--dht.port", "--dht.announce_ip",
                 "--dht.initial_peers", "--logging.debug", "--logging.trace", "--model.preset",
                 "--data.dataset", "--train.batch_size", "--wandb.project"):
        assert flag in text
    assert "(default: 8091)" in text and "(default: tiny)" in text


def test_fingerprint_changes_with_anything_peers_must_share():
    base = parse()
    agreed = {**swarm_agreement(base), "model": {"n_layer": 4}, "tokenizer": "abc"}
    same = fingerprint({**swarm_agreement(parse()), "model": {"n_layer": 4}, "tokenizer": "abc"})
    assert fingerprint(agreed) == same
    variants = [
        {**agreed, "model": {"n_layer": 5}},
        {**agreed, "tokenizer": "abd"},
        {**swarm_agreement(parse("--data.seq_len", "64")), "model": {"n_layer": 4}, "tokenizer": "abc"},
        {**swarm_agreement(parse("--train.lr", "0.01")), "model": {"n_layer": 4}, "tokenizer": "abc"},
        {**swarm_agreement(parse("--train.optimizer", "adamw8bit")), "model": {"n_layer": 4},
         "tokenizer": "abc"},
    ]
    prints = {fingerprint(v) for v in variants} | {fingerprint(agreed)}
    assert len(prints) == len(variants) + 1
    # Settings that are a peer's own business do not split the swarm.
    local_only = {**swarm_agreement(parse("--train.batch_size", "4", "--train.device", "cpu")),
                  "model": {"n_layer": 4}, "tokenizer": "abc"}
    assert fingerprint(local_only) == fingerprint(agreed)
    assert run_id("tiny", fingerprint(agreed)).startswith("hivetrain-tiny-")

HEAVY_MODULES = ("torch", "transformers", "hivemind", "wandb")
# The error path, run in a fresh interpreter: which heavy modules it imported before answering.
IMPORTED_ON_ERROR = """
import sys
from hivetrain.cli import main
code = main(sys.argv[1:])
print(code, *sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [
    ["miner", "--train.batch_size", "0"],
    ["validator", "--validator.alpha", "-1"],
    ["export", "--out", "unused", "--train.lr", "0"],
])
def test_bad_values_are_reported_before_the_heavy_imports(argv):
    """Issue 14: a bad value took 20 s because torch, transformers and hivemind came first."""
    result = subprocess.run([sys.executable, "-c", IMPORTED_ON_ERROR.format(heavy=HEAVY_MODULES),
                             *argv], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2"], result.stdout  # exit code 2 and none of them imported
    assert "must be positive" in result.stderr
