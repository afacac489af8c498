"""``Chain``: everything a hivetrain neuron asks of the chain, over the real ``bt.Subtensor``.

One facade for every network: finney, test, a local subtensor, any ws:// URL, or the embedded
dev chain (``DevChain`` plugged in as the SDK's substrate). Neurons call plain methods with
plain values; failures they can fix raise :class:`ChainError` saying what to run, and
``set_weights`` never raises at all, because a validator loop must outlive a bad round.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import bittensor as bt
from bittensor.settings import resolve_endpoint

from hivetrain import spec_version
from hivetrain.chain import dht_commitment
from hivetrain.chain.devchain import DevChain
from hivetrain.chain.errors import ChainError
from hivetrain.chain.metagraph import MetagraphSnapshot
from hivetrain.chain.wallets import load_wallet

log = logging.getLogger("hivetrain.chain")

# The SDK labels a connection by network name or URL; the dev chain gets a URL no one can dial,
# so SDK caches keyed by network never mix it up with a real local node.
EMBEDDED_ENDPOINT = "ws://embedded.hivetrain.invalid"
PUBLIC_NETWORKS = ("finney", "test", "local")
DEFAULT_MAX_COMMITMENT_FIELDS = 3


def _subtensor_factory(network: str, chain_endpoint: Optional[str],
                       chain_path: Optional[str]) -> tuple[Callable[[], bt.Subtensor], str]:
    """``(factory, where)``: how to build an unconnected ``bt.Subtensor``, and a description
    of the target for messages. Nothing is dialled here."""
    if chain_endpoint:
        if not chain_endpoint.startswith(("ws://", "wss://")):
            raise ChainError(f"--subtensor.chain_endpoint must be a ws:// or wss:// URL, "
                             f"got {chain_endpoint!r}")
        return lambda: bt.Subtensor(chain_endpoint), chain_endpoint
    if network == "embedded":
        if not chain_path:
            raise ChainError("--subtensor.network embedded needs --chain.path (the dev chain file every "
                             "local neuron shares); create one with `hivetrain chain init --chain.path FILE --wallet.name owner`")
        chain = DevChain.open(chain_path)
        return lambda: bt.Subtensor(EMBEDDED_ENDPOINT, substrate=chain), f"the dev chain {chain.path}"
    if network.startswith(("ws://", "wss://")):
        return lambda: bt.Subtensor(network), network
    if network in PUBLIC_NETWORKS:
        return lambda: bt.Subtensor(network), f"{network} ({resolve_endpoint(network)[1]})"
    raise ChainError(f"--subtensor.network must be one of {', '.join(PUBLIC_NETWORKS)}, embedded or a "
                     f"ws:// URL, got {network!r}")


def _connect_once(subtensor: bt.Subtensor, timeout: float) -> None:
    """``subtensor.connect()`` bounded by ``timeout``: a black-holed endpoint must not hang us."""
    outcome: list[BaseException | None] = []

    def attempt():
        try:
            subtensor.connect()
            outcome.append(None)
        except BaseException as error:  # handed to the caller's thread below
            outcome.append(error)

    worker = threading.Thread(target=attempt, name="hivetrain-chain-connect", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise TimeoutError(f"no answer within {timeout:.1f}s")
    if outcome[0] is not None:
        raise outcome[0]


def connect(factory: Callable[[], bt.Subtensor], where: str, timeout: float) -> bt.Subtensor:
    """Connect, retrying with exponential backoff for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay, attempts = 0.25, 0
    while True:
        attempts += 1
        subtensor = factory()
        try:
            _connect_once(subtensor, max(deadline - time.monotonic(), 0.1))
            return subtensor
        except (bt.BittensorError, OSError, TimeoutError) as error:
            last_error = error
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ChainError(
                f"cannot reach {where} after {attempts} attempts over {timeout:.0f}s ({last_error}); "
                "check that the node is running and reachable, or pick another one with "
                "--subtensor.network / --subtensor.chain_endpoint (--subtensor.network embedded "
                "runs the local dev chain)") from None
        log.warning("chain at %s unreachable (%s); retrying in %.1fs", where, last_error,
                    min(delay, remaining))
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 5.0)


class Chain:
    """A neuron's view of one subnet: identity, registration, endpoints, metagraph, weights.

    ``wallet`` may be None for read-only use (the CLI's tables, discovery by tools); methods
    that sign then raise :class:`ChainError`.
    """

    def __init__(self, subtensor: bt.Subtensor, netuid: int, wallet: Optional[bt.Wallet],
                 network: str, chain_path: Optional[str] = None, metagraph_every_blocks: int = 10):
        self._sub = subtensor
        self.netuid = netuid
        self._wallet = wallet
        self.network = network
        self.chain_path = chain_path
        self.block_time = float(subtensor.block_time())
        self._metagraph_ttl = metagraph_every_blocks * self.block_time
        self._metagraph: Optional[MetagraphSnapshot] = None

    @classmethod
    def open(cls, network: str = "finney", chain_endpoint: Optional[str] = None,
             chain_path: Optional[str] = None, netuid: int = 1, wallet: Optional[bt.Wallet] = None,
             *, connect_timeout: float = 30.0, metagraph_every_blocks: int = 10) -> "Chain":
        """Connect (retrying for ``connect_timeout`` seconds) and check that ``netuid`` exists."""
        factory, where = _subtensor_factory(network, chain_endpoint, chain_path)
        subtensor = connect(factory, where, connect_timeout)
        if not subtensor.query(bt.storage.SubtensorModule.NetworksAdded, [netuid]):
            subtensor.close()
            fix = (f"create it with `hivetrain chain init --chain.path {chain_path} --netuid {netuid}`"
                   if network == "embedded" and not chain_endpoint else
                   f"list existing subnets with `btcli subnets list --network {chain_endpoint or network}`")
            raise ChainError(f"subnet {netuid} does not exist on {where}; pass the right --netuid or {fix}")
        return cls(subtensor, netuid, wallet, chain_endpoint or network, chain_path, metagraph_every_blocks)

    @classmethod
    def from_config(cls, cfg, *, with_wallet: bool = True, connect_timeout: float = 30.0) -> "Chain":
        """Open from a :class:`hivetrain.config.Config`. An embedded chain without
        ``--chain.path`` lives at ``chain.sqlite`` in the neuron's run directory."""
        chain_path = cfg.chain.path or str(Path(cfg.run_dir) / "chain.sqlite")
        wallet = load_wallet(cfg.wallet.name, cfg.wallet.hotkey, cfg.wallet.path) if with_wallet else None
        return cls.open(cfg.subtensor.network, cfg.subtensor.chain_endpoint, chain_path, cfg.netuid, wallet,
                        connect_timeout=connect_timeout)

    def close(self) -> None:
        self._sub.close()

    # Identity and registration ----------------------------------------------------------------

    @property
    def wallet(self) -> bt.Wallet:
        if self._wallet is None:
            raise ChainError("this chain handle was opened without a wallet; "
                             "pass --wallet.name / --wallet.hotkey")
        return self._wallet

    @property
    def hotkey(self) -> str:
        """The wallet's hotkey ss58 address (public)."""
        return self.wallet.hotkey.ss58_address

    @property
    def uid(self) -> Optional[int]:
        """This hotkey's uid on the subnet right now, None when not registered (or pruned)."""
        uid = self._sub.query(bt.storage.SubtensorModule.Uids, [self.netuid, self.hotkey])
        return None if uid is None else int(uid)

    def register_command(self) -> str:
        """The command that registers this wallet's hotkey on this subnet."""
        w = self.wallet
        if self.network == "embedded":
            return (f"hivetrain chain register --chain.path {self.chain_path} --netuid {self.netuid} "
                    f"--wallet.name {w.name} --wallet.hotkey {w.hotkey_str} --wallet.path {w.path}")
        return (f"btcli subnets register --netuid {self.netuid} --wallet {w.name} --wallet-hotkey "
                f"{w.hotkey_str} --wallet-path {w.path} --network {self.network}")

    def ensure_registered(self) -> int:
        """The uid, or :class:`ChainError` with the registration command when unregistered."""
        uid = self.uid
        if uid is None:
            raise ChainError(f"hotkey {self.hotkey} ({self.wallet.name}/{self.wallet.hotkey_str}) is not "
                             f"registered on subnet {self.netuid}; register it with: "
                             f"{self.register_command()}")
        log.info("hotkey %s is uid %d on subnet %d", self.hotkey, uid, self.netuid)
        return uid

    # Endpoints --------------------------------------------------------------------------------

    def _require_registered(self, what: str) -> None:
        if self.uid is None:
            raise ChainError(f"cannot {what}: hotkey {self.hotkey} is not registered on subnet "
                             f"{self.netuid}; register it with: {self.register_command()}")

    def _submitted(self, what: str, submit: Callable[[], bt.ExtrinsicResult]) -> bool:
        """Run a write; a refusal (rate limit, chain error) is logged and reported as False."""
        try:
            result = submit()
        except bt.ChainError as error:
            result = bt.ExtrinsicResult(success=False, message=error.message, error=error)
        if not result.success:
            log.warning("could not %s on subnet %d: %s", what, self.netuid, result.message)
        return result.success

    def serve(self, ip: str, port: int) -> bool:
        """Publish the API endpoint with ``ServeAxon``, only when it differs from what is on chain.

        True when the chain now holds ``ip:port``; False (logged) when the chain refused, e.g.
        the serving rate limit.
        """
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise ChainError(f"--axon.external_ip must be an IP address, got {ip!r}") from None
        if address.is_unspecified:
            raise ChainError(f"cannot serve {ip}: peers cannot dial it; "
                             "set --axon.external_ip to a reachable IP")
        self._require_registered(f"serve {ip}:{port}")
        current = self._sub.query(bt.storage.SubtensorModule.Axons, [self.netuid, self.hotkey])
        if isinstance(current, dict) and int(current.get("ip") or 0) == int(address) \
                and int(current.get("port") or 0) == int(port):
            log.debug("axon %s:%d already on chain", ip, port)
            return True
        intent = bt.ServeAxon(netuid=self.netuid, ip=ip, port=int(port))
        if not self._submitted(f"serve {ip}:{port}",
                               lambda: self._sub.execute(intent, self.wallet, wait_for_finalization=False)):
            return False
        log.info("served axon %s:%d on subnet %d", ip, port, self.netuid)
        return True

    def _commitment_capacity(self) -> int:
        try:
            fields = int(self._sub.constant(bt.constants.Commitments.MaxFields))
        except bt.BittensorError:
            fields = DEFAULT_MAX_COMMITMENT_FIELDS
        return fields * dht_commitment.RAW_FIELD_BYTES

    def commit_dht_addrs(self, addrs: Sequence, run_id: Optional[str] = None) -> bool:
        """Publish this neuron's DHT multiaddrs (strings, or hivemind ``Multiaddr`` objects as
        ``dht.get_visible_maddrs()`` returns them) and the run it trains as its commitment.

        Skips the extrinsic when the chain already holds the same text. Addresses beyond the
        commitment's size are dropped with a warning. True when the chain holds them.
        """
        addrs = [str(addr) for addr in addrs]
        try:
            text, kept = dht_commitment.encode(addrs, self._commitment_capacity(), run_id)
        except ValueError as error:
            raise ChainError(f"cannot commit DHT addresses: {error}") from None
        if not kept:
            raise ChainError(f"no DHT multiaddr to commit (got {addrs!r}); "
                             "the DHT must be running first")
        if len(kept) < len(addrs):
            log.warning("commitment holds %d of %d DHT addresses; dropped %s", len(kept), len(addrs),
                        [a for a in addrs if a not in kept])
        self._require_registered("commit DHT addresses")
        current = self._sub.read("commitment", netuid=self.netuid, hotkey_ss58=self.hotkey)
        if current is not None and current.data == text:
            log.debug("DHT addresses already committed")
            return True
        call = bt.calls.Commitments.set_commitment(netuid=self.netuid,
                                                   info={"fields": dht_commitment.to_fields(text)})
        if not self._submitted("commit DHT addresses", lambda: self._sub.submit_call(
                call, self.wallet, signer="hotkey", wait_for_finalization=False)):
            return False
        log.info("committed %d DHT addresses on subnet %d", len(kept), self.netuid)
        return True

    def discover_dht_addrs(self) -> list[str]:
        """Multiaddrs committed by the other registered neurons of the subnet, newest first."""
        own = self._wallet.hotkey.ss58_address if self._wallet is not None else None
        addrs: dict[str, None] = {}
        for hotkey, commitment in self._sub.subnets.commitments(self.netuid).items():
            if hotkey == own or commitment.uid is None:
                continue
            for addr in dht_commitment.decode(commitment.value):
                addrs.setdefault(addr)
        return list(addrs)

    def committed_run_ids(self) -> dict[str, str]:
        """``hotkey -> run_id`` committed by the hotkeys registered on the netuid: which run
        each neuron trains, for the tools that must find the swarm's run (status, export)."""
        runs = {}
        for hotkey, commitment in self._sub.subnets.commitments(self.netuid).items():
            run_id = dht_commitment.decode_run_id(commitment.value)
            if commitment.uid is not None and run_id is not None:
                runs[hotkey] = run_id
        return runs

    def committed_peer_ids(self) -> set[str]:
        """DHT peer ids committed by hotkeys registered on the netuid (this neuron's included):
        the peers admitted to the swarm's averaging groups and progress accounting."""
        return set().union(*self.committed_peer_ids_by_uid().values())

    def committed_peer_ids_by_uid(self) -> dict[int, set[str]]:
        """uid -> the DHT peer ids its hotkey committed, for registered hotkeys: how a validator
        finds the miner behind a peer the swarm excluded."""
        peers: dict[int, set[str]] = {}
        for commitment in self._sub.subnets.commitments(self.netuid).values():
            if commitment.uid is None:
                continue
            for addr in dht_commitment.decode(commitment.value):
                _, _, peer = addr.rpartition("/p2p/")
                if peer:
                    peers.setdefault(commitment.uid, set()).add(peer)
        return peers

    # Metagraph, blocks, weights ---------------------------------------------------------------

    def metagraph(self, refresh: bool = False) -> MetagraphSnapshot:
        """The subnet snapshot, re-read from chain at most every ``metagraph_every_blocks``."""
        cached = self._metagraph
        if refresh or cached is None or time.monotonic() - cached.fetched_at >= self._metagraph_ttl:
            graph = self._sub.subnets.metagraph(self.netuid)
            if graph is None:
                raise ChainError(f"subnet {self.netuid} no longer exists on {self.network}")
            self._metagraph = MetagraphSnapshot.from_sdk(graph)
        return self._metagraph

    def weights(self) -> dict[int, dict[int, float]]:
        """Last weights on chain: ``{validator_uid: {miner_uid: fraction}}``, rows summing to 1."""
        return self._sub.read("weights", netuid=self.netuid)

    @property
    def weights_rate_limit(self) -> int:
        return int(self._sub.query(bt.storage.SubtensorModule.WeightsSetRateLimit, [self.netuid]) or 0)

    @property
    def block(self) -> int:
        return self._sub.block

    def block_hash(self, block: int) -> str:
        info = self._sub.block_info(block)
        if info is None or not info.hash:
            raise ChainError(f"block {block} is not on chain (head is {self.block})")
        return info.hash

    def set_weights(self, uids: Sequence[int], weights: Sequence[float]) -> bool:
        """Set this validator's weights; True when included, False (logged) otherwise.

        The SDK's ``SetWeights`` clips to the subnet's max weight, normalises and quantises to
        u16, and refuses before signing when the hotkey is unregistered or inside
        ``weights_rate_limit``. ``hivetrain.spec_version`` is the version key. Never raises:
        the validator loop retries next round.
        """
        try:
            intent = bt.SetWeights(netuid=self.netuid, uids=[int(u) for u in uids],
                                   weights=[float(w) for w in weights], version_key=spec_version)
            result = self._sub.execute(intent, self.wallet, wait_for_finalization=False)
        except Exception as error:  # preflight refusals, bad input, transport errors alike
            log.warning("weights not set on subnet %d: %s", self.netuid, error)
            return False
        if not result.success:
            log.warning("weights refused on subnet %d: %s", self.netuid, result.message)
            return False
        log.info("set weights for %d uids on subnet %d (%s)", len(intent.uids), self.netuid,
                 result.extrinsic_id)
        return True
