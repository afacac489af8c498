"""The miner's update endpoint and the validator's update client, over real HTTP on loopback.

A real uvicorn server serves updates from a real :class:`UpdateHistory`; the client must get
them bit for bit, and must refuse every reply a real miner would never send (tampered bytes,
wrong size, another hotkey's signature, a plain 500), each with a reason the scoring rule uses.
"""

import asyncio
import hashlib
import socket
import time

import pytest
import torch
from bittensor.sp_core import Keypair
from bittensor import http_auth
from fastapi import FastAPI, Request
from fastapi.responses import Response

from hivetrain.miner.api import ApiServer, create_app
from hivetrain.probe.schemas import UPDATE_HEADER, UPDATE_PATH, sign_update
from hivetrain.swarm.updates import UpdateHistory, update_digest
from hivetrain.validator.update_client import MISSING, UpdateReply, fetch_updates

MINER = Keypair.create_from_uri("//hivetrain-update-miner")
VALIDATOR = Keypair.create_from_uri("//hivetrain-update-validator")
OUTSIDER = Keypair.create_from_uri("//hivetrain-update-outsider")
SHAPES = [torch.Size([300, 7]), torch.Size([5])]


def wait_accepting(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise


@pytest.fixture(scope="module")
def history():
    history = UpdateHistory()
    generator = torch.Generator().manual_seed(0)
    for epoch in (3, 4):
        history.record(epoch, [torch.randn(s, generator=generator) for s in SHAPES], 80 + epoch)
    return history


def serve(app):
    server = ApiServer(app, "127.0.0.1", 0).start()
    wait_accepting(server.port)
    return server


@pytest.fixture(scope="module")
def miner(history):
    app = create_app(MINER, authorize=lambda h: None if h == VALIDATOR.ss58_address else "no",
                     probe=lambda r: {}, status=lambda: {}, update=history.get)
    server = serve(app)
    yield server
    server.stop()


def fetch(port, epoch, keypair=VALIDATOR, hotkey=MINER.ss58_address, shapes=SHAPES, timeout=10):
    return asyncio.run(fetch_updates(keypair, [(7, hotkey, "127.0.0.1", port)], epoch, shapes,
                                     timeout))[7]


def test_a_kept_update_arrives_bit_for_bit_with_a_signed_envelope(miner, history):
    reply, reason = fetch(miner.port, 4)
    assert isinstance(reply, UpdateReply), reason
    kept = history.get(4)
    assert all(torch.equal(a, b) for a, b in zip(reply.tensors, kept.tensors))
    assert (reply.envelope.epoch, reply.envelope.samples) == (4, 84)
    assert reply.envelope.digest == kept.digest == update_digest(reply.tensors)
    assert reply.nbytes == 4 * (300 * 7 + 5)


def test_the_envelope_names_the_group_the_update_was_averaged_with(miner, history):
    """Named after the all-reduce (the update was recorded before it), signed with the rest."""
    group = ["QmPeerBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", "QmPeerAAAAAAAAAAAAAAAAAAAAAAAA"]
    digest = history.get(3).digest
    history.set_group(3, group)
    reply, reason = fetch(miner.port, 3)
    assert isinstance(reply, UpdateReply), reason
    assert reply.envelope.group == sorted(group) and reply.envelope.signature_valid()
    assert reply.envelope.digest == digest == update_digest(reply.tensors)


def test_an_epoch_not_kept_is_missing_not_silence(miner):
    assert fetch(miner.port, 9)[0] == MISSING


def test_strangers_and_bad_shapes_get_nothing(miner):
    reply, reason = fetch(miner.port, 4, keypair=OUTSIDER)
    assert reply is None and "403" in reason
    reply, reason = fetch(miner.port, 4, shapes=[torch.Size([10])])
    assert reply is None and "larger" in reason
    reply, reason = fetch(miner.port, 4, shapes=SHAPES + [torch.Size([3])])
    assert reply is None and "values" in reason
    reply, reason = fetch(1, 4)
    assert reply is None and "failed" in reason


def forging_miner(history, tamper):
    """A plain app that answers like a miner, then breaks one thing (``tamper``)."""
    app = FastAPI()

    @app.post(UPDATE_PATH)
    async def update(request: Request):
        kept = history.get(4)
        raw = b"".join(t.numpy().tobytes() for t in kept.tensors)
        body = await request.body()
        envelope = dict(epoch=4, samples=kept.samples, numel=len(raw) // 4, digest=kept.digest,
                        caller_hotkey=VALIDATOR.ss58_address,
                        request_nonce=int(request.headers[http_auth.HEADER_NONCE]),
                        request_sha256=hashlib.sha256(body).hexdigest())
        signer, raw, envelope = tamper(MINER, raw, envelope)
        return Response(raw, headers={UPDATE_HEADER: sign_update(signer, **envelope)
                                      .model_dump_json()})
    return serve(app)


def flip_one_byte(raw):
    return raw[:100] + bytes([raw[100] ^ 1]) + raw[101:]


@pytest.mark.parametrize("tamper, why", [
    (lambda s, raw, env: (s, raw, {**env, "request_nonce": 0}), "another request"),
    (lambda s, raw, env: (OUTSIDER, raw, env), "another hotkey"),
    (lambda s, raw, env: (s, flip_one_byte(raw), env), "do not match the signed digest"),
    (lambda s, raw, env: (s, raw[:-4], env), "values"),
])
def test_forged_or_rebound_updates_are_refused(history, tamper, why):
    server = forging_miner(history, tamper)
    try:
        reply, reason = fetch(server.port, 4)
    finally:
        server.stop()
    assert reply is None and why in reason, reason


def test_the_forging_miner_passes_when_it_forges_nothing(history):
    """The control for the test above: the same app, untampered, is accepted."""
    server = forging_miner(history, lambda s, raw, env: (s, raw, env))
    try:
        reply, reason = fetch(server.port, 4)
    finally:
        server.stop()
    assert isinstance(reply, UpdateReply), reason
