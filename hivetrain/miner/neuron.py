"""Miner start-up, in the order an operator reads in the log.

data -> model -> run_id -> checkpoint -> DHT -> optimizer -> catch up with peers -> train.
Shutdown on SIGINT/SIGTERM is graceful: the loop finishes its step, writes a checkpoint and
leaves the DHT, so a restart resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import torch

from hivetrain import __version__
from hivetrain.config import Config, check_port_free, fingerprint, run_id, swarm_agreement
from hivetrain.data import load_token_data, load_tokenizer, tokenizer_digest
from hivetrain.miner.checkpoint import load_checkpoint
from hivetrain.miner.trainer import Trainer
from hivetrain.model.gpt2 import build_model, count_parameters, model_fingerprint_facts
from hivetrain.swarm.dht import start_dht, visible_maddrs
from hivetrain.swarm.optimizer import make_optimizer
from hivetrain.telemetry import Telemetry

logger = logging.getLogger(__name__)

PEER_FILE = "peer.json"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA request without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--train.device {name} asked for CUDA, but torch sees no GPU; "
                         f"use --train.device cpu or install a CUDA build of torch")
    return device


def write_peer_file(run_dir: Path, **info) -> None:
    """Atomically publish how to reach this peer, for local tooling (demo, status, tests)."""
    path = run_dir / PEER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, path)


def compute_run_id(cfg: Config, model, tokenizer) -> str:
    agreed = {**swarm_agreement(cfg), "model": model_fingerprint_facts(model),
              "tokenizer": tokenizer_digest(tokenizer)}
    return run_id(cfg.model.preset, fingerprint(agreed))


def run_miner(cfg: Config) -> None:
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    check_port_free(cfg.dht.port, "--dht.port")
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    tokenizer = load_tokenizer(cfg.data.tokenizer)
    data = load_token_data(cfg.data, tokenizer)
    model = build_model(cfg.model.preset, data.vocab_size, cfg.data.seq_len, cfg.neuron.seed,
                        cfg.model.pretrained)
    swarm_run_id = compute_run_id(cfg, model, tokenizer)
    logger.info("hivetrain %s miner: %s, %.2fM parameters, run_id %s, device %s", __version__,
                cfg.model.preset, count_parameters(model) / 1e6, swarm_run_id, device)

    checkpoint = load_checkpoint(run_dir, swarm_run_id)
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model)
        logger.info("resuming from checkpoint at epoch %d (%d samples)", checkpoint.epoch,
                    checkpoint.samples)
    model.to(device)

    dht = start_dht(cfg.dht.host_ip, cfg.dht.port, cfg.dht.announce_ip, cfg.dht.initial_peers,
                    run_dir / "identity.key", cfg.dht.bootstrap_timeout)
    peer_id = str(dht.peer_id)
    write_peer_file(run_dir, peer_id=peer_id, maddrs=visible_maddrs(dht), run_id=swarm_run_id,
                    pid=os.getpid(), version=__version__)
    optimizer = make_optimizer(dht, swarm_run_id, model, cfg.train, device)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint.optimizer)
    catch_up_with_swarm(optimizer)

    telemetry = Telemetry(cfg, run_name=f"miner-{cfg.wallet.hotkey}-{peer_id[-8:]}",
                          group=swarm_run_id)
    telemetry.log("start", peer_id=peer_id, run_id=swarm_run_id, epoch=optimizer.local_epoch,
                  resumed_epoch=checkpoint.epoch if checkpoint else None,
                  parameters=count_parameters(model), vocab_size=data.vocab_size,
                  device=str(device))
    trainer = Trainer(model, optimizer, data.train_batches(peer_id, cfg.train.batch_size,
                                                           cfg.data.seq_len),
                      data.heldout_batches(cfg.train.eval_batches, cfg.train.batch_size,
                                           cfg.data.seq_len),
                      cfg.train, device, telemetry, run_dir, swarm_run_id)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: trainer.stop.set())
    try:
        trainer.run()
    finally:
        telemetry.log("stop", epoch=optimizer.local_epoch, samples=trainer.state.samples)
        telemetry.close()
        optimizer.shutdown()
        dht.shutdown()
    logger.info("miner stopped at epoch %d after %d samples", optimizer.local_epoch,
                trainer.state.samples)


def catch_up_with_swarm(optimizer, wait: float = 10.0) -> None:
    """A peer that is behind the swarm loads the current state before its first step."""
    optimizer.tracker.fetched_global_progress_this_epoch.wait(wait)
    global_epoch = optimizer.tracker.global_epoch
    if global_epoch > optimizer.local_epoch:
        logger.info("swarm is at epoch %d, this peer at %d: loading state from peers",
                    global_epoch, optimizer.local_epoch)
        optimizer.load_state_from_peers()
        logger.info("loaded state from peers: now at epoch %d", optimizer.local_epoch)
