"""Validator start-up: chain + registration -> the swarm's recipe -> DHT -> rounds.

The validator builds the same model and run_id as the miners and joins their DHT with a
swarm optimizer that never steps: it exists to load the swarm-global state from peers, so
every probe is checked against the model the swarm actually holds.
"""

from __future__ import annotations

import logging
import signal

from hivetrain import __version__
from hivetrain.config import Config
from hivetrain.host import prepare_host
from hivetrain.membership import join_swarm, open_chain
from hivetrain.recipe import build_recipe
from hivetrain.shutdown import end_process, release
from hivetrain.swarm.optimizer import make_optimizer
from hivetrain.telemetry import Telemetry
from hivetrain.validator import state as score_store
from hivetrain.validator.loop import Validator

logger = logging.getLogger(__name__)


def run_validator(cfg: Config) -> None:
    device = prepare_host(cfg)
    scores = score_store.load(cfg.run_dir / score_store.SCORES_FILE)  # checked by check_start
    chain, uid = open_chain(cfg)
    recipe = build_recipe(cfg)
    model = recipe.model.to(device)
    logger.info("hivetrain %s validator uid %d on run_id %s, device %s", __version__, uid,
                recipe.run_id, device)
    member = join_swarm(cfg, chain, uid, recipe.run_id)
    optimizer = make_optimizer(member.dht, recipe.run_id, model, cfg.train, device,
                               observer=True, admitted=member.admitted())
    telemetry = Telemetry(cfg, run_name=f"validator-uid{uid}-{chain.hotkey[:8]}",
                          group=recipe.run_id)
    telemetry.log("start", peer_id=member.peer_id, run_id=recipe.run_id, uid=uid)
    validator = Validator(cfg.validator, chain, uid, model, optimizer, recipe.data,
                          cfg.data.seq_len, telemetry, cfg.run_dir, recipe.run_id, scores,
                          refresh_admission=lambda: optimizer.admit(member.admitted()))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: validator.stop.set())
    try:
        validator.run()
    finally:
        telemetry.close()
        released = release([("the swarm optimizer", optimizer.shutdown),
                            ("the DHT", member.dht.shutdown), ("the chain connection", chain.close)])
    logger.info("validator stopped after %d rounds", validator.scores.rounds)
    if not released:
        end_process(0)
