"""``hivetrain status``: the swarm at a glance, from the chain and the DHT, without training.

It joins the DHT as a client (it can dial out, nobody dials it), reads the peers' progress
reports, reads the metagraph and the validators' weights, and asks every served endpoint for
``/v1/status``. ``--json`` prints the same facts for scripts.
"""

from __future__ import annotations

import argparse
import json

from hivetrain.config import Config, add_config_arguments, config_from_args

SECTIONS = ["wallet", "subtensor", "chain", "dht", "neuron", "model", "data", "train", "logging"]


def add_status_command(commands) -> None:
    status = commands.add_parser("status", help="the swarm at a glance (chain + DHT)",
                                 description=__doc__.split("\n\n")[1])
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_config_arguments(status, SECTIONS)
    status.set_defaults(handler=run_status)


def endpoint_status(axon: str | None, timeout: float = 3.0) -> dict | None:
    import httpx

    if not axon:
        return None
    try:
        response = httpx.get(f"http://{axon}/v1/status", timeout=timeout, trust_env=False)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def collect(cfg: Config) -> dict:
    # Imported here so that building the CLI parser stays fast.
    from hivetrain.chain import Chain
    from hivetrain.recipe import build_recipe
    from hivetrain.swarm.dht import start_dht
    from hivetrain.swarm.progress import read_progress

    chain = Chain.open(cfg.subtensor.network, cfg.subtensor.chain_endpoint,
                       cfg.chain.path or str(cfg.run_dir / "chain.sqlite"), cfg.netuid)
    try:
        metagraph = chain.metagraph(refresh=True)
        weights = chain.weights()
        initial_peers = [*cfg.dht.initial_peers, *chain.discover_dht_addrs()]
    finally:
        chain.close()
    run_id = build_recipe(cfg).run_id
    dht = start_dht(cfg.dht.host_ip, 0, None, initial_peers, None, cfg.dht.bootstrap_timeout,
                    client_mode=True)
    try:
        peers = read_progress(dht, run_id)
    finally:
        dht.shutdown()
    neurons = []
    for uid in metagraph.uids:
        received = [row.get(uid, 0.0) for row in weights.values()]
        neurons.append({"uid": uid, "hotkey": metagraph.hotkeys[uid], "stake": metagraph.stake[uid],
                        "validator_permit": metagraph.validator_permit[uid],
                        "axon": metagraph.axons[uid], "incentive": metagraph.incentive[uid],
                        "weight": max(received, default=0.0),
                        "status": endpoint_status(metagraph.axons[uid])})
    return {"netuid": cfg.netuid, "block": metagraph.block, "run_id": run_id,
            "global_epoch": max((p.epoch for p in peers), default=None),
            "peers_online": len(peers), "peers": [p.__dict__ for p in peers], "neurons": neurons}


def print_tables(facts: dict) -> None:
    print(f"subnet {facts['netuid']} at block {facts['block']}  run_id {facts['run_id']}")
    print(f"global epoch {facts['global_epoch']}, {facts['peers_online']} peers reporting\n")
    print(f"{'peer id':<54} {'epoch':>5} {'samples/s':>9} {'age s':>6}")
    for p in facts["peers"]:
        print(f"{p['peer_id']:<54} {p['epoch']:>5} {p['samples_per_second']:9.1f} "
              f"{p['seconds_since_report']:6.1f}")
    print(f"\n{'uid':>3} {'hotkey':<10} {'permit':<6} {'stake':>8} {'weight':>6} {'incent':>6} "
          f"{'endpoint':<21} {'answers /v1/status'}")
    for n in facts["neurons"]:
        status = n["status"]
        answer = (f"epoch {status['epoch']}, {status['samples_per_second']:.1f} samples/s, "
                  f"{status['device']}" if status else "-")
        print(f"{n['uid']:>3} {n['hotkey'][:10]:<10} {str(n['validator_permit']):<6} "
              f"{n['stake']:8.1f} {n['weight']:6.3f} {n['incentive']:6.3f} "
              f"{n['axon'] or '-':<21} {answer}")


def run_status(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, role="status", sections=SECTIONS)
    facts = collect(cfg)
    if args.json:
        print(json.dumps(facts, indent=1))
    else:
        print_tables(facts)
    return 0
