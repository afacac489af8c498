"""The DiLoCo averager: robust all-reduce, chain-admitted groupmates, a ban list, checked downloads.

:class:`SwarmAverager` is hivemind's ``DecentralizedAverager`` (which runs in its own process)
with five changes, all made by subclassing:

* **Admission, enforced in matchmaking.** Only peers in the admitted set (DHT identities that a
  hotkey registered on the netuid committed on chain) and not banned form groups with this peer:
  as a leader it turns their join requests away, as a follower it does not ask them to lead. A
  leader that admitted someone this peer has banned cannot force it on us either: that sender's
  copies are ignored and the parts it reduces are not applied (see :mod:`hivetrain.swarm.robust`).
  A peer that does not run this code can still *try* to join groups led by others that do not
  check; what it sends is then bounded by every checking reducer. So admission is enforced inside
  matchmaking for every group an honest peer leads or joins, and checked after the fact for the
  rest.
* **Robust reduction** with :class:`~hivetrain.swarm.robust.RobustAllReduceRunner`; the verdicts
  of each round come back to the host with the round's result, and offenders are banned here at
  once (``BAN_SECONDS``) so the next groups exclude them.
* **State downloads from admitted peers only**, with peers to skip (the host verifies each
  download against the swarm's published sketches and asks again, skipping the sender, when it
  does not match: :mod:`hivetrain.swarm.state_check`).
* The host's global state is what it serves (``get_current_state``).
* **DHT requests bounded by time, not tensors or CPU speed**: the state is not re-declared after
  every averaged tensor, and a peer waiting for a group looks the group key up at most every
  ``MIN_LOOKUP_SECONDS`` (tests/test_dht_cost.py; docs/benchmarks.md, "What averaging asks of
  the DHT").
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from typing import AsyncIterator, Callable, Iterable, Optional

from hivemind.averaging import DecentralizedAverager
from hivemind.averaging.allreduce import AveragingMode
from hivemind.averaging.group_info import GroupInfo
from hivemind.averaging.key_manager import GroupKeyManager
from hivemind.averaging.matchmaking import Matchmaking
from hivemind.compression import deserialize_torch_tensor
from hivemind.p2p import P2PContext, PeerID
from hivemind.proto import averaging_pb2
from hivemind.utils import MPFuture, get_dht_time
from hivemind.utils.asyncio import aiter_with_timeout, as_aiter, azip
from hivemind.utils.streaming import combine_from_streaming
from hivemind.utils.timed_storage import ValueWithExpiration

from hivetrain.swarm.robust import RobustAllReduceRunner

logger = logging.getLogger(__name__)

# How long a peer caught sending or reducing bad parts stays out of this peer's groups.
BAN_SECONDS = 600.0
# The least time one state source gets for each message of its state (a quarter of the
# download's budget when that is more): a tiny model's state arrives in 0.1-0.3 s on loopback.
MIN_SOURCE_SECONDS = 10.0
# The least time between two lookups of the peers looking for a group. hivemind looks again as
# soon as a lookup ends while it knows no leader to ask, so a follower waiting out the
# matchmaking window sent ~40 DHT lookups a second, each a traversal of the swarm.
MIN_LOOKUP_SECONDS = 0.25


class _PacedGroupKeyManager(GroupKeyManager):
    """hivemind's group keys, looked up at most once per ``MIN_LOOKUP_SECONDS``."""

    _last_lookup = -math.inf

    async def get_averagers(self, group_key, only_active):
        await asyncio.sleep(max(0.0, self._last_lookup + MIN_LOOKUP_SECONDS - time.monotonic()))
        self._last_lookup = time.monotonic()
        return await super().get_averagers(group_key, only_active)


class _AdmittingMatchmaking(Matchmaking):
    """Matchmaking that never asks a peer outside the averager's admitted set to lead its group."""

    averager: "SwarmAverager"

    async def _request_join_group(self, leader: PeerID) -> Optional[GroupInfo]:
        if not self.averager.may_average_with(str(leader)):
            return None
        return await super()._request_join_group(leader)


class SwarmAverager(DecentralizedAverager):
    """See the module docstring.

    :param get_state: ``() -> (metadata, tensors, infos)``, the host's global state to serve.
    :param admitted: the peer ids allowed in groups; None admits every peer (no chain: tests,
        private swarms).
    """

    def __init__(self, get_state: Callable, *args, admitted: Iterable[str] | None = None,
                 **kwargs):
        self._get_state = get_state
        self._admitted = None if admitted is None else set(admitted)
        self._banned: dict[str, float] = {}  # peer -> dht time the ban ends
        self._runners: dict[bytes, RobustAllReduceRunner] = {}
        self._last_average_rms = 0.0  # per element, of the last round averaged without refusals
        super().__init__(*args, **kwargs)

    # ---- host side ---------------------------------------------------------------------------

    def get_current_state(self):
        return self._get_state()

    def set_admitted(self, peer_ids: Iterable[str] | None) -> None:
        """Replace the admitted set (in this process and the averager's)."""
        self._admitted = None if peer_ids is None else set(peer_ids)
        self._outer_pipe.send(("_set_admitted", [], dict(peer_ids=self._admitted)))

    def ban(self, peer_ids: Iterable[str], seconds: float = BAN_SECONDS) -> None:
        until = get_dht_time() + seconds
        peers = list(peer_ids)
        self._banned.update({peer: until for peer in peers})
        self._outer_pipe.send(("_ban", [], dict(peers=peers, until=until)))

    def download_state(self, timeout: float, skip: Iterable[str] = (), prefer: Iterable[str] = ()):
        """``(peer, metadata, tensors)`` from the admitted peer with the best priority outside
        ``skip`` (those in ``prefer`` first), or None when none sends a state in time.

        A download the averager process has not finished ``timeout`` + 5 s later is no state:
        measured in a loaded fresh-clone ``make test``, the TimeoutError it raised crashed the
        validator, whose callers (and the miners') already continue from their own state."""
        future = MPFuture()
        self._outer_pipe.send(("_download_state", [], dict(timeout=timeout, skip=set(skip),
                                                           prefer=set(prefer), future=future)))
        try:
            return future.result(timeout=timeout + 5)
        except TimeoutError:
            logger.warning("no state arrived within %.0f s", timeout + 5)
            future.cancel()
            return None

    # ---- both sides ----------------------------------------------------------------------------

    def may_average_with(self, peer: str) -> bool:
        return (self._admitted is None or peer in self._admitted) and not self.is_banned(peer)

    def banned_peers(self) -> list[str]:
        now = get_dht_time()
        return sorted(peer for peer, until in self._banned.items() if until > now)

    def is_banned(self, peer: str) -> bool:
        return self._banned.get(peer, -1.0) > get_dht_time()

    # ---- the averager process -------------------------------------------------------------------

    async def _set_admitted(self, peer_ids):
        self._admitted = peer_ids

    async def _ban(self, peers, until):
        self._banned.update({peer: until for peer in peers})

    @property
    def _matchmaking(self) -> Matchmaking:
        return self.__matchmaking

    @_matchmaking.setter
    def _matchmaking(self, matchmaking: Matchmaking) -> None:
        # hivemind builds its Matchmaking inside the averager process (``_run_internal``); this
        # turns that very object into the admitting subclass, which only overrides methods.
        matchmaking.__class__ = _AdmittingMatchmaking
        matchmaking.averager = self
        matchmaking.group_key_manager.__class__ = _PacedGroupKeyManager
        self.__matchmaking = matchmaking

    async def rpc_join_group(self, request: averaging_pb2.JoinRequest, context: P2PContext
                             ) -> AsyncIterator[averaging_pb2.MessageFromLeader]:
        if not self.may_average_with(str(context.remote_id)):
            logger.debug("turned away %s's join request: not admitted, or banned", context.remote_id)
            yield averaging_pb2.MessageFromLeader(code=averaging_pb2.PROTOCOL_VIOLATION)
            return
        async for response in super().rpc_join_group(request, context):
            yield response

    async def _aggregate_with_group(self, group_info: GroupInfo, min_vector_size: int, **kwargs):
        """The round's gathered data and the robust reduction's verdicts (offenders banned)."""
        try:
            gathered = await super()._aggregate_with_group(group_info, min_vector_size, **kwargs)
        finally:
            runner = self._runners.pop(group_info.group_id, None)
        verdicts = runner.report() if runner is not None else {}
        if verdicts.get("offenders"):
            until = get_dht_time() + BAN_SECONDS
            self._banned.update({peer: until for peer in verdicts["offenders"]})
        return {"gathered": gathered, "verdicts": verdicts}

    async def _run_allreduce_inplace_(self, tensors, group_info: GroupInfo,
                                      group_id: Optional[bytes] = None, **kwargs):
        # hivemind's method with the robust runner in place of AllReduceRunner.
        group_id = group_info.group_id if group_id is None else group_id
        runner = RobustAllReduceRunner(
            banned=self.is_banned, reference_rms=self._last_average_rms, p2p=self._p2p,
            servicer_type=type(self), prefix=self.prefix, tensors=tensors, group_id=group_id,
            ordered_peer_ids=group_info.peer_ids, **kwargs)
        self._runners[group_id] = runner
        assert group_id in self._running_groups, f"group {group_id} was not registered"
        self._running_groups[group_id].set_result(runner)
        if runner.modes[group_info.peer_ids.index(self.peer_id)] != AveragingMode.AUX:
            async for tensor, update in azip(as_aiter(*tensors), runner):
                tensor.add_(update, alpha=self._averaging_alpha)
                self.last_updated = get_dht_time()
                # hivemind also sets ``_state_updated`` here, once per averaged tensor, and each
                # set re-stores this peer's ``all_averagers`` record in the DHT: ~40 stores per
                # round for the tiny model. The record only holds the sharing priority, which
                # the host sets once per epoch (and the setter re-declares it), so none is sent.
            if not runner.verdicts.bad_reducers:
                size = sum(t.numel() for t in tensors)
                rms = math.sqrt(sum(float(t.float().norm()) ** 2 for t in tensors) / max(1, size))
                if math.isfinite(rms):
                    self._last_average_rms = rms
        else:
            async for _ in runner:
                raise ValueError("aux peers should not receive averaged tensors")

    async def _download_state(self, future: MPFuture, timeout: float, skip: set,
                              prefer: set = frozenset()):
        """hivemind's ``_load_state_from_peers``, limited to admitted peers outside ``skip``, and
        returning who sent the state."""
        try:
            key = f"{self._matchmaking.group_key_manager.prefix}.all_averagers"
            found = self.dht.get(key, latest=True) or ({}, None)
            priority = {
                PeerID(peer): (float(info.value), random.random())  # random breaks ties
                for peer, info in found[0].items()
                if isinstance(info, ValueWithExpiration) and isinstance(info.value, (float, int))}
            deadline = time.monotonic() + timeout
            order = sorted(priority, key=lambda p: (str(p) in prefer, priority[p]), reverse=True)
            for peer in order:
                name = str(peer)
                if peer == self.peer_id or name in skip or not self.may_average_with(name):
                    continue
                started = time.monotonic()
                if started >= deadline:
                    break
                # A source that stalls (its host busy, or gone) gets a share of the budget, not
                # all of it: the next one is asked while the caller still waits.
                patience = min(deadline - started, max(MIN_SOURCE_SECONDS, timeout / 4))
                try:
                    stub = self.get_stub(self._p2p, peer, namespace=self.prefix)
                    stream = await asyncio.wait_for(
                        stub.rpc_download_state(averaging_pb2.DownloadRequest()), patience)
                    metadata, parts, tensors = None, [], []
                    async for message in aiter_with_timeout(stream, timeout=patience):
                        if message.metadata:
                            metadata = self.serializer.loads(message.metadata)
                        if message.tensor_part.dtype and parts:
                            tensors.append(deserialize_torch_tensor(combine_from_streaming(parts)))
                            parts = []
                        parts.append(message.tensor_part)
                    if parts:
                        tensors.append(deserialize_torch_tensor(combine_from_streaming(parts)))
                    if not metadata:
                        continue
                    logger.info("downloaded the state from %s in %.2f s", name,
                                time.monotonic() - started)
                    future.set_result((name, metadata, tensors))
                    return
                except Exception as error:  # a peer that fails to send is skipped
                    logger.warning("could not download the state from %s: %r", name, error)
                    await asyncio.sleep(0)
        finally:
            if not future.done():
                future.set_result(None)
