"""Joining the subnet: wallet, chain, registration, then the DHT bootstrapped from the chain.

Each neuron publishes its DHT multiaddrs as a chain commitment; a starting neuron bootstraps from
the addresses other neurons committed on the netuid plus ``--dht.initial_peers``, so no bootstrap
IP is hard-coded anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hivetrain.chain import Chain
from hivetrain.config import Config
from hivetrain.swarm.dht import SwarmError, start_dht, visible_maddrs

if TYPE_CHECKING:  # hivemind is imported at run time by swarm/ only
    import hivemind

logger = logging.getLogger(__name__)


@dataclass
class Membership:
    chain: Chain
    uid: int
    dht: "hivemind.DHT"

    @property
    def peer_id(self) -> str:
        return str(self.dht.peer_id)

    def admitted(self) -> set[str] | None:
        """The DHT peers allowed in averaging groups and progress accounting: those committed on
        chain by registered hotkeys, and this one. None (admit all) only when the chain cannot
        be read at start; afterwards the caller keeps its previous set on a failed read."""
        try:
            return self.chain.committed_peer_ids() | {self.peer_id}
        except Exception as error:  # the chain is unreachable for a moment: keep what we have
            logger.warning("could not read the admitted peers from the chain: %s", error)
            return None


def open_chain(cfg: Config) -> tuple[Chain, int]:
    """Load the wallet, connect, and stop with the registration command when unregistered."""
    chain = Chain.from_config(cfg)
    return chain, chain.ensure_registered()


def join_swarm(cfg: Config, chain: Chain, uid: int, run_id: str,
               client_mode: bool = False) -> Membership:
    """Start the DHT from chain-discovered and flag peers, then commit our own addresses and
    the ``run_id`` we train (tools read it back to find the swarm's run)."""
    discovered = chain.discover_dht_addrs()
    initial_peers = list(dict.fromkeys([*cfg.dht.initial_peers, *discovered]))
    logger.info("bootstrapping from %d peers (%d from --dht.initial_peers, %d from the chain)",
                len(initial_peers), len(cfg.dht.initial_peers), len(discovered))
    start = dict(host_ip=cfg.dht.host_ip, port=cfg.dht.port, announce_ip=cfg.dht.announce_ip,
                 identity_path=cfg.run_dir / "identity.key", client_mode=client_mode)
    try:
        dht = start_dht(initial_peers=initial_peers, bootstrap_timeout=cfg.dht.bootstrap_timeout,
                        **start)
    except SwarmError:
        if cfg.dht.initial_peers or not discovered or client_mode:
            raise
        # Only stale commitments (every committed peer is gone): this neuron starts the swarm
        # anew and the others will find it through the commitment it makes below.
        logger.warning("none of the %d peers committed on chain answers; starting a new swarm",
                       len(discovered))
        dht = start_dht(initial_peers=[], bootstrap_timeout=cfg.dht.bootstrap_timeout, **start)
    if not client_mode:
        chain.commit_dht_addrs(visible_maddrs(dht), run_id)
    return Membership(chain, uid, dht)
