"""Miner start-up, in the order an operator reads in the log.

chain + registration -> data -> model -> run_id -> checkpoint -> DHT (bootstrapped from chain
commitments) -> optimizer -> catch up with peers -> API served on chain -> train.
Shutdown on SIGINT/SIGTERM is graceful: the loop finishes its step, writes a checkpoint and
leaves the DHT, so a restart resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

from hivetrain import __version__
from hivetrain.atomic import atomic_write_text
from hivetrain.config import Config
from hivetrain.host import prepare_host
from hivetrain.membership import join_swarm, open_chain
from hivetrain.miner.api import ApiServer, create_app
from hivetrain.miner.callers import CallerPolicy
from hivetrain.miner.checkpoint import load_checkpoint
from hivetrain.miner.priority import lower_this_thread
from hivetrain.miner.service import MinerService
from hivetrain.miner.trainer import Trainer
from hivetrain.model.gpt2 import count_parameters
from hivetrain.recipe import build_recipe
from hivetrain.shutdown import StopGuard, end_process, release
from hivetrain.swarm.dht import visible_maddrs
from hivetrain.swarm.optimizer import make_optimizer
from hivetrain.swarm_run import recipe_flags
from hivetrain.telemetry import Telemetry, bounded

logger = logging.getLogger(__name__)

PEER_FILE = "peer.json"
CHECKPOINT_TIMEOUT_S = 20.0  # the watchdog's checkpoint, should the loop's locks be held


def write_peer_file(run_dir: Path, **info) -> None:
    """Atomically publish how to reach this peer, for local tooling (demo, status, tests)."""
    atomic_write_text(run_dir / PEER_FILE, json.dumps(info, indent=1))


def run_miner(cfg: Config) -> None:
    run_dir = cfg.run_dir
    device = prepare_host(cfg)

    chain, uid = open_chain(cfg)
    recipe = build_recipe(cfg)
    model, data = recipe.model, recipe.data
    logger.info("hivetrain %s miner uid %d: %s, %.2fM parameters, run_id %s, device %s",
                __version__, uid, cfg.model.preset, count_parameters(model) / 1e6, recipe.run_id,
                device)
    checkpoint = load_checkpoint(run_dir, recipe.run_id)
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model)
        logger.info("resuming from checkpoint at epoch %d (%d samples)", checkpoint.epoch,
                    checkpoint.samples)
    model.to(device)

    member = join_swarm(cfg, chain, uid, recipe.run_id)
    optimizer = make_optimizer(member.dht, recipe.run_id, model, cfg.train, device,
                               admitted=member.admitted())
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint.optimizer)
    catch_up_with_swarm(optimizer)

    telemetry = Telemetry(cfg, run_name=f"miner-uid{uid}-{chain.hotkey[:8]}", group=recipe.run_id)
    def assigned(epoch: int):
        return data.assigned_batches(recipe.run_id, chain.hotkey, epoch, cfg.train.batch_size,
                                     cfg.data.seq_len)

    trainer = Trainer(model, optimizer, assigned,
                      data.heldout_batches(cfg.train.eval_batches, cfg.train.batch_size,
                                           cfg.data.seq_len),
                      cfg.train, device, telemetry, run_dir, recipe.run_id,
                      refresh_admission=lambda: optimizer.admit(member.admitted()))
    service = MinerService(trainer, member.peer_id, recipe.run_id, recipe_flags(cfg))
    callers = CallerPolicy(chain, cfg.blacklist.min_stake)
    api = ApiServer(create_app(chain.wallet, authorize=callers.authorize, probe=service.probe,
                               status=service.status, update=service.update),
                    port=cfg.axon.port).start()
    chain.serve(cfg.axon.external_ip or cfg.dht.announce_ip or "127.0.0.1", api.port)
    write_peer_file(run_dir, peer_id=member.peer_id, maddrs=visible_maddrs(member.dht),
                    run_id=recipe.run_id, uid=uid, hotkey=chain.hotkey, api_port=api.port,
                    pid=os.getpid(), version=__version__)
    telemetry.log("start", peer_id=member.peer_id, run_id=recipe.run_id, uid=uid,
                  epoch=optimizer.local_epoch, parameters=count_parameters(model),
                  resumed_epoch=checkpoint.epoch if checkpoint else None,
                  vocab_size=data.vocab_size, device=str(device))

    def record_stop() -> None:
        """The stop record and line carry the epoch of the parameters the final checkpoint holds
        (the optimizer may be one ahead when its step is stuck between counting an epoch and
        publishing it)."""
        telemetry.log("stop", epoch=trainer.published_epoch, samples=trainer.state.samples)
        logger.info("miner stopped at epoch %d after %d samples", trainer.published_epoch,
                    trainer.state.samples)

    def finish_from_watchdog() -> None:
        bounded(trainer.save, CHECKPOINT_TIMEOUT_S, "the final checkpoint")
        record_stop()  # wandb is left as it is: its service got the same signal

    guard = StopGuard(on_stop=trainer.stop.set, finish=finish_from_watchdog)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, guard.on_signal)
    lower_this_thread(cfg.train.nice)
    try:
        trainer.run()
    finally:
        guard.loop_returned()
        record_stop()
        telemetry.close()
        released = release([("the miner API", api.stop), ("the swarm optimizer", optimizer.shutdown),
                            ("the DHT", member.dht.shutdown), ("the chain connection", chain.close)])
    if not released:
        end_process(0)


def catch_up_with_swarm(optimizer, wait: float = 10.0) -> None:
    """A peer that is behind the swarm loads the current state before its first step."""
    optimizer.wait_for_swarm_progress(wait)
    global_epoch = optimizer.swarm_epoch
    if global_epoch > optimizer.local_epoch:
        logger.info("swarm is at epoch %d, this peer at %d: loading state from peers",
                    global_epoch, optimizer.local_epoch)
        optimizer.load_state_from_peers()
        logger.info("loaded state from peers: now at epoch %d", optimizer.local_epoch)
