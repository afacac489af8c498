"""``hivetrain status``: the swarm at a glance, from the chain and the DHT, without training.

It reads the metagraph, the validators' weights and the run_id every neuron committed on chain,
asks every served endpoint for ``/v1/status``, then joins the DHT as a client (it can dial out,
nobody dials it) and reads the progress reports of the swarm's run. No training flag is needed:
the run is the one most neurons committed, and a warning says when the flags given disagree.
The chain table prints before the DHT is asked, so it shows even when no peer answers; the DHT
gets one attempt (``--dht.bootstrap_timeout`` to retry). ``--json`` prints the same facts.
"""

from __future__ import annotations

import argparse
import json
import sys

from hivetrain.config import Config, add_config_arguments, config_from_args
from hivetrain.swarm_run import endpoint_statuses, given_recipe_flags, swarm_run_id

SECTIONS = ["wallet", "subtensor", "chain", "dht", "neuron", "model", "data", "train", "logging"]


def add_status_command(commands) -> None:
    status = commands.add_parser("status", help="the swarm at a glance (chain + DHT)",
                                 description=__doc__.split("\n\n")[1])
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_config_arguments(status, SECTIONS)
    status.set_defaults(handler=run_status)


def collect_chain(cfg: Config) -> dict:
    """The subnet's neurons, weights, commitments and endpoint answers: no DHT involved."""
    from hivetrain.chain import Chain  # imported here so that building the CLI stays fast

    chain = Chain.open(cfg.subtensor.network, cfg.subtensor.chain_endpoint,
                       cfg.chain.path or str(cfg.run_dir / "chain.sqlite"), cfg.netuid)
    try:
        metagraph = chain.metagraph(refresh=True)
        weights = chain.weights()
        committed = chain.committed_run_ids()
        dht_addrs = chain.discover_dht_addrs()
    finally:
        chain.close()
    answers = endpoint_statuses([metagraph.axons[uid] for uid in metagraph.uids])
    neurons = []
    for uid, answer in zip(metagraph.uids, answers):
        hotkey = metagraph.hotkeys[uid]
        received = [row.get(uid, 0.0) for row in weights.values()]
        neurons.append({"uid": uid, "hotkey": hotkey, "stake": metagraph.stake[uid],
                        "validator_permit": metagraph.validator_permit[uid],
                        "axon": metagraph.axons[uid], "incentive": metagraph.incentive[uid],
                        "weight": max(received, default=0.0), "run_id": committed.get(hotkey),
                        "status": answer})
    run_id, disagreement = swarm_run_id(committed)
    votes = sum(value == run_id for value in committed.values())
    return {"netuid": cfg.netuid, "block": metagraph.block, "run_id": run_id,
            "run_id_from": f"the chain, {votes} of {len(metagraph.uids)} neurons" if run_id else None,
            "dht_addrs": dht_addrs, "neurons": neurons,
            "warnings": [disagreement] if disagreement else []}


def settle_run_id(facts: dict, cfg: Config, given: list[str]) -> None:
    """Check the flags given against the swarm's run; derive the run_id from them if none is
    committed. Building the recipe is skipped when no recipe flag was given: it is slow."""
    if facts["run_id"] and not given:
        return
    from hivetrain.recipe import build_recipe

    from_flags = build_recipe(cfg).run_id
    if facts["run_id"] is None:
        facts["run_id"], facts["run_id_from"] = from_flags, "the flags (no neuron committed one)"
    elif from_flags != facts["run_id"]:
        facts["warnings"].append(
            f"the flags given ({' '.join('--' + f for f in given)}) make run_id {from_flags}, but "
            f"the swarm trains {facts['run_id']}; showing the swarm's run (drop the flags, or pass "
            f"the miners' own)")


def collect_swarm(facts: dict, cfg: Config, bootstrap_timeout: float) -> None:
    """The progress reports of the swarm's run, read from the DHT; a failure is noted, not raised."""
    facts.update(peers=[], peers_online=0, global_epoch=None, dht_error=None)
    initial_peers = [*cfg.dht.initial_peers, *facts.pop("dht_addrs")]
    if not initial_peers:
        facts["dht_error"] = "no DHT address is committed on chain and no --dht.initial_peers given"
        return
    from hivetrain.swarm.dht import SwarmError, start_dht
    from hivetrain.swarm.progress import read_progress

    try:
        dht = start_dht(cfg.dht.host_ip, 0, None, initial_peers, None, bootstrap_timeout,
                        client_mode=True)
    except SwarmError as error:
        facts["dht_error"] = str(error)
        return
    try:
        peers = read_progress(dht, facts["run_id"])
    finally:
        dht.shutdown()
    facts.update(peers=[p.__dict__ for p in peers], peers_online=len(peers),
                 global_epoch=max((p.epoch for p in peers), default=None))


def print_chain(facts: dict) -> None:
    print(f"subnet {facts['netuid']} at block {facts['block']}  run_id {facts['run_id']} "
          f"(from {facts['run_id_from']})")
    print(f"\n{'uid':>3} {'hotkey':<10} {'permit':<6} {'stake':>8} {'weight':>6} {'incent':>6} "
          f"{'run':<6} {'endpoint':<21} {'answers /v1/status'}")
    for n in facts["neurons"]:
        status = n["status"]
        answer = (f"epoch {status['epoch']}, {status['samples_per_second']:.1f} samples/s, "
                  f"{status['device']}" if status else "-")
        run = "-" if n["run_id"] is None else ("same" if n["run_id"] == facts["run_id"] else "OTHER")
        print(f"{n['uid']:>3} {n['hotkey'][:10]:<10} {str(n['validator_permit']):<6} "
              f"{n['stake']:8.1f} {n['weight']:6.3f} {n['incentive']:6.3f} {run:<6} "
              f"{n['axon'] or '-':<21} {answer}", flush=True)


def print_swarm(facts: dict) -> None:
    if facts["dht_error"]:
        print(f"\nDHT: no progress read ({facts['dht_error']})")
        return
    print(f"\nglobal epoch {facts['global_epoch']}, {facts['peers_online']} peers reporting")
    print(f"{'peer id':<54} {'epoch':>5} {'samples/s':>9} {'age s':>6}")
    for p in facts["peers"]:
        print(f"{p['peer_id']:<54} {p['epoch']:>5} {p['samples_per_second']:9.1f} "
              f"{p['seconds_since_report']:6.1f}")


def run_status(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, role="status", sections=SECTIONS)
    facts = collect_chain(cfg)
    settle_run_id(facts, cfg, given_recipe_flags(args))
    for warning in facts["warnings"]:
        print(f"hivetrain status: warning: {warning}", file=sys.stderr)
    if not args.json:
        print_chain(facts)
    retry = "dht.bootstrap_timeout" in vars(args)  # one attempt unless asked: status is a snapshot
    collect_swarm(facts, cfg, cfg.dht.bootstrap_timeout if retry else 0.0)
    if args.json:
        print(json.dumps(facts, indent=1))
    else:
        print_swarm(facts)
    return 0
