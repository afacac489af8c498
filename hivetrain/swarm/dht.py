"""Joining the hivemind DHT: listen and announce addresses, a persistent identity, bootstrap.

Operators know a peer by its libp2p peer ID, so each neuron keeps its private key in its run
directory and comes back with the same ID after a restart. Bootstrap peers come from the flags
(and, once the chain layer is wired in, from multiaddrs other neurons committed on chain); when
none answers, the neuron retries with backoff for ``--dht.bootstrap_timeout`` seconds and then
stops with a message that says what to check, instead of hivemind's bare "failed to connect".
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import hivemind

from hivetrain import lifeline
from hivetrain.errors import OperatorError

logger = logging.getLogger(__name__)


class SwarmError(OperatorError, RuntimeError):
    """The neuron cannot join the swarm; the message says what to check."""


def listen_maddrs(host_ip: str, port: int) -> list[str]:
    return [f"/ip4/{host_ip}/tcp/{port}"]


def announce_maddrs(announce_ip: str | None, port: int) -> list[str] | None:
    """What other peers should dial; None lets libp2p announce what it listens on."""
    if not announce_ip:
        return None
    if port == 0:
        raise SwarmError("--dht.announce_ip needs a fixed --dht.port (open that TCP port in your "
                         "firewall), because a random port cannot be announced")
    return [f"/ip4/{announce_ip}/tcp/{port}"]


def start_dht(host_ip: str, port: int, announce_ip: str | None, initial_peers: Sequence[str],
              identity_path: Path | None, bootstrap_timeout: float,
              client_mode: bool = False) -> hivemind.DHT:
    """Start a DHT node and bootstrap it, retrying with backoff until ``bootstrap_timeout``.

    :param initial_peers: multiaddrs to bootstrap from; empty starts a new swarm.
    :param identity_path: file with the libp2p private key, created on first use, so the peer ID
        survives restarts; None makes a fresh ID each start (clients, tests).
    :param client_mode: a peer that dials out only (validators behind NAT, status queries).
    """
    lifeline.install()  # before hivemind forks its first helper: they die with this process
    if identity_path is not None:
        identity_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + bootstrap_timeout
    delay, attempt = 1.0, 0
    while True:
        attempt += 1
        try:
            dht = hivemind.DHT(
                initial_peers=list(initial_peers),
                host_maddrs=listen_maddrs(host_ip, port),
                announce_maddrs=announce_maddrs(announce_ip, port),
                identity_path=str(identity_path) if identity_path else None,
                client_mode=client_mode,
                start=True,
            )
            logger.info("joined the DHT as %s (%d initial peers)", dht.peer_id, len(initial_peers))
            return dht
        except SwarmError:
            raise
        except Exception as error:  # hivemind raises bare Exceptions from its daemon
            remaining = deadline - time.monotonic()
            if not initial_peers or remaining <= 0:
                raise SwarmError(_explain(error, initial_peers, attempt)) from error
            logger.warning("DHT start attempt %d failed (%s); retrying in %.0f s", attempt,
                           str(error).splitlines()[0] if str(error) else type(error).__name__,
                           min(delay, remaining))
            time.sleep(min(delay, remaining))  # backoff between real connection attempts
            delay = min(delay * 2, 30.0)


def _explain(error: Exception, initial_peers: Sequence[str], attempts: int) -> str:
    text = str(error) or type(error).__name__
    if "bootstrap" in text.lower() or initial_peers:
        return (f"could not reach any of {len(initial_peers)} initial DHT peers after {attempts} "
                f"attempts ({text.splitlines()[0]}); check that --dht.initial_peers are current "
                f"multiaddrs of running peers and that their TCP ports are open")
    if "address already in use" in text.lower():
        return f"the DHT port is already in use ({text.splitlines()[0]}); pick another --dht.port"
    return f"the hivemind daemon failed to start: {text.splitlines()[0]} (see docs/troubleshooting.md)"


def visible_maddrs(dht: hivemind.DHT) -> list[str]:
    """Multiaddrs (with /p2p/<peer id>) that other peers can bootstrap from."""
    return [str(addr) for addr in dht.get_visible_maddrs()]


def loopback_dhts(size: int) -> list[hivemind.DHT]:
    """``size`` DHT nodes on 127.0.0.1, the others bootstrapped from the first: several peers
    of one swarm in one process, as the tests and benchmarks run them. The caller shuts them
    down."""
    first = hivemind.DHT(start=True, host_maddrs=listen_maddrs("127.0.0.1", 0))
    maddrs = visible_maddrs(first)
    return [first] + [hivemind.DHT(start=True, host_maddrs=listen_maddrs("127.0.0.1", 0),
                                   initial_peers=maddrs) for _ in range(size - 1)]
