"""The validator's client for miners' updates: fetch, bound, verify, or say exactly why not.

A miner's update for epoch ``e`` is ``G_e - theta`` over the trainable parameters, as it went
into the all-reduce (:mod:`hivetrain.swarm.updates`). The validator knows how many float32 values
it must hold (its own model has the same trainable parameters), so it reads no byte more than
that, and keeps an update only when the miner's signed envelope is bound to this request, is
signed by the uid's hotkey and its digest matches the bytes that arrived.

A fetch ends in one of three ways, which the scoring rule tells apart:

* an :class:`UpdateReply` (verified tensors, envelope, seconds, bytes);
* ``MISSING``: the miner answered, authenticated, that it kept no update for that epoch (404);
* ``None`` plus a reason: no usable answer (down, timeout, error, unsigned, malformed, short,
  oversized, digest mismatch): "did not respond" as far as the update goes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import httpx
import numpy as np
import torch
from pydantic import ValidationError

from hivetrain.chain.signing import http_auth, resolve_signer
from hivetrain.probe.schemas import UPDATE_HEADER, UPDATE_PATH, UpdateEnvelope, UpdateRequest
from hivetrain.validator.prober import UNSERVED_IPS, Target, miner_client

logger = logging.getLogger(__name__)

MISSING = "missing"


@dataclass(frozen=True)
class UpdateReply:
    """A verified update: tensors shaped like the validator's trainable parameters."""

    envelope: UpdateEnvelope
    tensors: list[torch.Tensor]
    seconds: float
    nbytes: int

    @cached_property
    def vector(self) -> torch.Tensor:
        """The tensors flattened into one: built once per reply for the copy check and the
        consistency check (each a model-sized copy: 497 MB on gpt2)."""
        return torch.cat([t.reshape(-1) for t in self.tensors])


class _Refused(Exception):
    """Why a miner's update does not count."""


async def fetch_updates(keypair, targets: Sequence[tuple[int, str, str, int]], epoch: int,
                        shapes: Sequence[torch.Size], timeout: float,
                        ) -> dict[int, tuple[UpdateReply | str | None, str]]:
    """Fetch every target's update for ``epoch`` concurrently.

    :param shapes: the trainable parameters' shapes, in ``model.parameters()`` order.
    :param timeout: seconds per miner, connection to last byte (an update that arrives later is
        "too late").
    :returns: ``uid -> (UpdateReply | MISSING | None, reason)``.
    """
    signer = resolve_signer(keypair, role="hotkey")
    body = UpdateRequest(epoch=epoch).model_dump_json().encode()
    async with miner_client(timeout) as client:
        replies = await asyncio.gather(*(
            _fetch_one(client, signer, Target(*target), body, epoch, list(shapes), timeout)
            for target in targets))
    return {Target(*target).uid: reply for target, reply in zip(targets, replies)}


async def _fetch_one(client, signer, target: Target, body: bytes, epoch: int, shapes, timeout):
    started = time.monotonic()
    try:
        if target.ip in UNSERVED_IPS or not 0 < target.port < 65536:
            raise _Refused("axon not served")
        headers = http_auth.sign(signer, method="POST", path=UPDATE_PATH, body=body,
                                 receiver_ss58=target.hotkey)
        numel = sum(int(np.prod(shape)) for shape in shapes)
        got = await asyncio.wait_for(_post(client, target, body, headers, numel), timeout)
        if got is None:
            return MISSING, f"miner kept no update for epoch {epoch}"
        envelope, raw = got
        _check(envelope, raw, target, signer.ss58_address, int(headers[http_auth.HEADER_NONCE]),
               body, numel)
    except _Refused as why:
        return None, str(why)
    except TimeoutError:
        return None, f"update not received within {timeout:g} s"
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as error:
        return None, f"update fetch failed: {error!r}"[:200]
    values = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
    tensors = [chunk.view(shape) for chunk, shape in
               zip(values.split([int(np.prod(s)) for s in shapes]), shapes)]
    return UpdateReply(envelope, tensors, time.monotonic() - started, len(raw)), "ok"


async def _post(client, target: Target, body: bytes, headers: dict, numel: int):
    """``(envelope, body bytes)``, or None on an authenticated 404; reads at most 4 * numel."""
    host = f"[{target.ip}]" if ":" in target.ip else target.ip
    url = f"http://{host}:{target.port}{UPDATE_PATH}"
    async with client.stream("POST", url, content=body,
                             headers={**headers, "Content-Type": "application/json"}) as reply:
        if reply.status_code == 404:
            return None
        if reply.status_code != 200:
            raise _Refused(f"HTTP {reply.status_code}")
        try:
            envelope = UpdateEnvelope.model_validate_json(reply.headers.get(UPDATE_HEADER, ""))
        except ValidationError as error:
            raise _Refused(f"malformed update envelope ({error.error_count()} errors)") from None
        chunks, size = [], 0
        async for chunk in reply.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > 4 * numel:
                raise _Refused(f"update larger than the model's {numel} values")
    return envelope, b"".join(chunks)


def _check(envelope: UpdateEnvelope, raw: bytes, target: Target, caller: str, nonce: int,
           body: bytes, numel: int) -> None:
    if envelope.hotkey != target.hotkey:
        raise _Refused("update signed for another hotkey")
    if (envelope.caller_hotkey, envelope.request_nonce,
            envelope.request_sha256) != (caller, nonce, hashlib.sha256(body).hexdigest()):
        raise _Refused("update envelope is bound to another request")
    if not envelope.signature_valid():
        raise _Refused("bad miner signature on the update")
    if envelope.numel != numel or len(raw) != 4 * numel:
        raise _Refused(f"update holds {len(raw) // 4} values, the model has {numel}")
    if hashlib.sha256(raw).hexdigest() != envelope.digest:
        raise _Refused("update bytes do not match the signed digest")
