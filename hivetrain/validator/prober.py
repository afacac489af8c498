"""The validator's probe client: ask many miners at once, keep only answers that prove themselves.

Each request is signed with ``bittensor.http_auth`` for that miner's hotkey as receiver, so a
miner cannot forward it to another one. An answer counts only if it is a 200 with a well-formed
:class:`~hivetrain.probe.schemas.ProbeResponse`, signed by the hotkey the chain lists for that uid,
and bound to *this* request (caller, nonce, body hash), so an old or borrowed answer is worthless.
Anything else (timeouts, refused connections, errors, garbage, a bad signature) is ``None``:
"did not respond", which is what scoring needs and all it needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Mapping, NamedTuple, Optional

import httpx
from hivetrain.chain.signing import http_auth, resolve_signer
from pydantic import ValidationError

from hivetrain.probe.schemas import PROBE_PATH, ProbeRequest, ProbeResponse

logger = logging.getLogger(__name__)

# A full answer (1024 coordinates) is ~60 KiB; anything far bigger is not an answer.
MAX_RESPONSE_BYTES = 1024 * 1024
UNSERVED_IPS = frozenset({"", "0.0.0.0", "::"})


def miner_client(timeout: float) -> httpx.AsyncClient:
    """The client the validator talks to miners with: no proxy from the environment (miners are
    dialled directly), and room for every miner of a large subnet at once."""
    return httpx.AsyncClient(trust_env=False, timeout=timeout,
                             limits=httpx.Limits(max_connections=256))


class Target(NamedTuple):
    """One miner as the metagraph lists it."""

    uid: int
    hotkey: str
    ip: str
    port: int


@dataclass(frozen=True)
class ProbeReply:
    """A verified answer and how long it took, request signing to last byte."""

    response: ProbeResponse
    latency_s: float


OnReply = Callable[[int, Optional[ProbeReply]], Awaitable[None]]


class _Unanswered(Exception):
    """Why one miner's answer does not count; logged, then turned into None."""


async def probe_miners(keypair, targets: Iterable[tuple[int, str, str, int]],
                       requests: ProbeRequest | Mapping[int, ProbeRequest], timeout: float, *,
                       client: Optional[httpx.AsyncClient] = None,
                       on_reply: Optional[OnReply] = None) -> dict[int, Optional[ProbeReply]]:
    """Probe every target concurrently over one client; ``None`` for each miner whose answer
    does not count.

    :param keypair: the validator's hotkey (``Keypair`` or ``bittensor.Wallet``).
    :param targets: ``(uid, hotkey, ip, port)`` per miner; an unserved axon (ip 0.0.0.0 or port 0)
        is not contacted.
    :param requests: one request for every target, or ``uid -> request`` (each miner its own
        seed and batch).
    :param timeout: seconds per miner, connection to last byte.
    :param client: an ``httpx.AsyncClient`` to reuse across rounds; one is made otherwise.
    :param on_reply: awaited with ``(uid, reply)`` as each miner's answer is settled, while the
        others are still outstanding (the validator fetches the swarm's state the moment an
        answer comes from an epoch it does not hold yet).
    """
    signer = resolve_signer(keypair, role="hotkey")
    targets = [Target(*target) for target in targets]
    if client is None:
        async with miner_client(timeout) as own:
            return await probe_miners(signer, targets, requests, timeout, client=own,
                                      on_reply=on_reply)
    # One request for everyone is serialized once; a request per uid once for its miner.
    shared = requests.model_dump_json().encode() if isinstance(requests, ProbeRequest) else None

    async def probe(target: Target) -> Optional[ProbeReply]:
        body = shared or requests[target.uid].model_dump_json().encode()
        reply = await _probe_one(client, signer, target, body, timeout)
        if on_reply is not None:
            await on_reply(target.uid, reply)
        return reply

    replies = await asyncio.gather(*(probe(target) for target in targets))
    return {target.uid: reply for target, reply in zip(targets, replies)}


async def _probe_one(client: httpx.AsyncClient, signer, target: Target, body: bytes,
                     timeout: float) -> Optional[ProbeReply]:
    started = time.monotonic()
    try:
        if target.ip in UNSERVED_IPS or not 0 < target.port < 65536:
            raise _Unanswered("axon not served")
        headers = http_auth.sign(signer, method="POST", path=PROBE_PATH, body=body,
                                 receiver_ss58=target.hotkey)
        raw = await asyncio.wait_for(_post(client, target, body, headers), timeout)
        response = _verified(raw, target, signer.ss58_address,
                             int(headers[http_auth.HEADER_NONCE]), body)
    except _Unanswered as why:
        logger.debug("uid %d (%s:%d): no answer: %s", target.uid, target.ip, target.port, why)
        return None
    except (TimeoutError, httpx.HTTPError, httpx.InvalidURL, OSError) as error:
        logger.debug("uid %d (%s:%d): no answer: %r", target.uid, target.ip, target.port, error)
        return None
    return ProbeReply(response=response, latency_s=time.monotonic() - started)


async def _post(client: httpx.AsyncClient, target: Target, body: bytes, headers: dict) -> bytes:
    host = f"[{target.ip}]" if ":" in target.ip else target.ip
    headers = {**headers, "Content-Type": "application/json"}
    url = f"http://{host}:{target.port}{PROBE_PATH}"
    async with client.stream("POST", url, content=body, headers=headers) as reply:
        if reply.status_code != 200:
            raise _Unanswered(f"HTTP {reply.status_code}")
        chunks, size = [], 0
        async for chunk in reply.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise _Unanswered("answer too large")
    return b"".join(chunks)


def _verified(raw: bytes, target: Target, caller: str, nonce: int, body: bytes) -> ProbeResponse:
    """The parsed answer, if it is signed by ``target.hotkey`` and bound to this request."""
    try:
        response = ProbeResponse.model_validate_json(raw)
    except ValidationError as error:
        raise _Unanswered(f"malformed answer ({error.error_count()} errors)") from None
    if response.hotkey != target.hotkey:
        raise _Unanswered("answer claims another hotkey")
    if (response.caller_hotkey, response.request_nonce,
            response.request_sha256) != (caller, nonce, hashlib.sha256(body).hexdigest()):
        raise _Unanswered("answer is bound to another request")
    if not response.signature_valid():
        raise _Unanswered("bad miner signature")
    return response
