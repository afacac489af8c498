"""What averaging asks of the DHT: hivemind's averager against SwarmAverager, in one process.

    .venv/bin/python bench/dht_requests.py --preset tiny --rounds 3 --window 3

Three DHT nodes on loopback: two carry averagers, the third only counts the requests that reach
it (:class:`~hivetrain.swarm.traffic.DHTRequests`; on a swarm this small every request reaches
every node). For each averager class, the same two measurements:

* ``waiting``: one averager looks for a group that nobody else joins, for ``--window`` seconds,
  as a peer does when it starts matchmaking before the others: group-key lookups per second.
* ``rounds``: two averagers holding the tensors of ``--preset`` (one per parameter, as DiLoCo
  averages them) average ``--rounds`` times: stores of the ``all_averagers`` record per round.

``hivemind`` is ``hivemind.averaging.DecentralizedAverager`` as installed; ``hivetrain`` is
:class:`~hivetrain.swarm.averager.SwarmAverager`, which differs from it here only in how often it
asks (its admission and robust reduction are off: no admitted set, honest copies). Printed: each
count and hivetrain's as a fraction of hivemind's.
"""

from __future__ import annotations

import argparse
import json
import time

from hivemind.averaging import DecentralizedAverager

from hivetrain.model.gpt2 import build_model
from hivetrain.swarm.averager import SwarmAverager
from hivetrain.swarm.dht import loopback_dhts
from hivetrain.swarm.traffic import DHTRequests, step_together

PREFIX = "bench"


def make_averager(kind: str, dht, tensors, window: float, prefix: str):
    common = dict(averaged_tensors=[t.clone() for t in tensors], dht=dht, prefix=prefix,
                  start=True, min_matchmaking_time=window - 1, request_timeout=1.0,
                  target_group_size=2)
    if kind == "hivemind":
        return DecentralizedAverager(**common)
    return SwarmAverager(lambda: ({}, [], []), **common)


def waiting(kind: str, dhts, tensors, window: float) -> float:
    """Group-key lookups per second of one averager that finds no group."""
    prefix = f"{PREFIX}-{kind}-waiting"
    requests = DHTRequests(dhts[2])
    lone = make_averager(kind, dhts[0], tensors[:1], window, prefix)
    started = time.monotonic()
    try:
        lone.step(timeout=window)
    except Exception:  # hivemind: "could not find a group", as intended
        pass
    finally:
        elapsed = time.monotonic() - started
        lone.shutdown()
    return requests.count("lookup", f"{prefix}.0b") / elapsed


def rounds(kind: str, dhts, tensors, window: float, n_rounds: int) -> float:
    """Stores of the ``all_averagers`` record per round of two averagers."""
    prefix = f"{PREFIX}-{kind}-rounds"
    requests = DHTRequests(dhts[2])
    peers = [make_averager(kind, dht, tensors, window, prefix) for dht in dhts[:2]]
    try:
        for _ in range(n_rounds):
            if None in step_together(peers, timeout=30):
                raise RuntimeError(f"{kind}: a round did not average; rerun on a quieter machine")
    finally:
        for peer in peers:
            peer.shutdown()
    return requests.count("store", f"{prefix}.all_averagers") / n_rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="model whose tensors are averaged")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=3.0,
                        help="seconds the lone averager looks for a group")
    args = parser.parse_args()
    tensors = [p.detach() for p in build_model(args.preset, 4096, 64, seed=0).parameters()]
    dhts = loopback_dhts(3)
    try:
        figures = {kind: {"waiting_lookups_per_s": waiting(kind, dhts, tensors, args.window),
                          "rounds_declares_per_round": rounds(kind, dhts, tensors, args.window,
                                                              args.rounds)}
                   for kind in ("hivemind", "hivetrain")}
    finally:
        for dht in reversed(dhts):
            dht.shutdown()
    print(f"{args.preset}: {len(tensors)} tensors, {args.rounds} rounds, {args.window:.0f} s "
          f"waiting")
    for measure in ("waiting_lookups_per_s", "rounds_declares_per_round"):
        base, ours = figures["hivemind"][measure], figures["hivetrain"][measure]
        print(f"{measure:28s} hivemind {base:8.1f}  hivetrain {ours:6.1f}  "
              f"hivetrain/hivemind {ours / base if base else float('nan'):.3f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
