"""The miner API on a real uvicorn server, attacked and used honestly, and the validator's prober.

A tiny GPT-2 stands in for the swarm model, so an honest probe is checked against the same
``probe_loss_and_grad`` computed locally. Fake miners (plain FastAPI apps on real sockets) give
the prober the answers a real miner never would: slow, garbage, forged or re-bound.
"""

import asyncio
import hashlib
import json
import socket
import time

import httpx
import pytest
import torch
from bittensor import http_auth
from bittensor.sp_core import Keypair
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from transformers import GPT2Config, GPT2LMHeadModel

from hivetrain import __version__
from hivetrain.chain import Chain, create_dev_wallet, init_dev_chain, register_dev, stake_dev
from hivetrain.miner.api import ApiServer, PortInUse, RateLimiter, create_app
from hivetrain.miner.callers import DEFAULT_REFRESHES_PER_MINUTE, REFUSED_TTL_S, CallerPolicy
from hivetrain.probe.compute import cosine, param_digest, probe_loss_and_grad
from hivetrain.probe.schemas import PROBE_PATH, STATUS_PATH, ProbeAnswer, ProbeRequest, sign_answer
from hivetrain.validator.prober import probe_miners
from hivetrain.validator.scoring import ProbeOutcome, classify

MINER = Keypair.create_from_uri("//hivetrain-test-miner")
VALIDATOR = Keypair.create_from_uri("//hivetrain-test-validator")
SPAMMER = Keypair.create_from_uri("//hivetrain-test-spammer")
OUTSIDER = Keypair.create_from_uri("//hivetrain-test-outsider")
FUZZER = Keypair.create_from_uri("//hivetrain-test-fuzzer")  # its own rate-limit budget
ALLOWED = {VALIDATOR.ss58_address, SPAMMER.ss58_address, FUZZER.ss58_address}
RATE = 20
MAX_BODY = 64 * 1024
EPOCH = 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=512, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def miner(model):
    def probe(request: ProbeRequest) -> dict:
        result = probe_loss_and_grad(model, torch.tensor(request.input_ids), request.seed,
                                     request.n_coords)
        return dict(loss=result.loss, coords=result.coords, grad_values=result.grad_values,
                    epoch=EPOCH, param_digest=param_digest(model), peer_id="QmTestPeer",
                    samples_since_last_probe=42)

    def authorize(hotkey: str):
        return None if hotkey in ALLOWED else "not a validator with a permit on this subnet"

    status = lambda: dict(epoch=EPOCH, peer_id="QmTestPeer", samples_per_second=12.5, device="cpu")
    app = create_app(MINER, authorize=authorize, probe=probe, status=status,
                     max_body_bytes=MAX_BODY, rate_limit_per_minute=RATE)
    with ApiServer(app, "127.0.0.1", 0) as server:
        wait_accepting(server.port)
        yield server


def wait_accepting(port: int, timeout: float = 5.0) -> None:
    """Bounded poll until the port takes TCP connections."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise


def tokens(batch=2, seq=16, seed=0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 512, (batch, seq), generator=generator).tolist()


def probe_body(**changes) -> bytes:
    fields = dict(input_ids=tokens(), seed=7, expected_epoch=EPOCH, n_coords=16)
    return json.dumps({**fields, **changes}).encode()


def post(port, body: bytes, signer=VALIDATOR, receiver=MINER.ss58_address, nonce=None,
         headers=None) -> httpx.Response:
    """POST /v1/probe signed by ``signer`` (or unsigned when ``signer`` is None)."""
    auth = {} if signer is None else http_auth.sign(signer, method="POST", path=PROBE_PATH,
                                                    body=body, receiver_ss58=receiver,
                                                    nonce_ns=nonce)
    return httpx.post(f"http://127.0.0.1:{port}{PROBE_PATH}", content=body,
                      headers={**auth, "Content-Type": "application/json", **(headers or {})})


def probe_one(port, request: ProbeRequest, hotkey=MINER.ss58_address, timeout=10.0):
    replies = asyncio.run(probe_miners(VALIDATOR, [(5, hotkey, "127.0.0.1", port)], request,
                                       timeout))
    return replies[5]


def assert_honest_reply(port, model, seed=1234):
    request = ProbeRequest(input_ids=tokens(seed=seed), seed=seed, expected_epoch=EPOCH,
                           n_coords=32)
    reply = probe_one(port, request)
    assert reply is not None
    answer = reply.response
    local = probe_loss_and_grad(model, torch.tensor(request.input_ids), seed, 32)
    assert answer.loss == pytest.approx(local.loss, rel=1e-6)
    assert answer.coords == local.coords
    assert answer.grad_values == pytest.approx(local.grad_values, rel=1e-5, abs=1e-9)
    assert answer.epoch == EPOCH and answer.peer_id == "QmTestPeer"
    assert answer.samples_since_last_probe == 42
    assert answer.param_digest == param_digest(model)
    assert (answer.hotkey, answer.caller_hotkey) == (MINER.ss58_address, VALIDATOR.ss58_address)
    outcome = ProbeOutcome(responded=True, reported_epoch=answer.epoch, reference_epoch=EPOCH,
                           reported_loss=answer.loss, reference_loss=local.loss,
                           coords_match=answer.coords == local.coords,
                           grad_cosine=cosine(answer.grad_values, local.grad_values))
    assert classify(outcome) == (1.0, "ok")


def test_honest_probe_matches_local_computation(miner, model):
    assert_honest_reply(miner.port, model)


def test_status_is_public(miner):
    reply = httpx.get(f"http://127.0.0.1:{miner.port}{STATUS_PATH}")
    assert reply.status_code == 200
    status = reply.json()
    assert status["version"] == __version__ and status["hotkey"] == MINER.ss58_address
    assert (status["epoch"], status["device"], status["samples_per_second"]) == (EPOCH, "cpu", 12.5)
    assert status["uptime_s"] >= 0


def test_openapi_is_published(miner):
    schema = httpx.get(f"http://127.0.0.1:{miner.port}/openapi.json").json()
    assert {PROBE_PATH, STATUS_PATH} <= set(schema["paths"])
    models = set(schema["components"]["schemas"])
    assert {"ProbeRequest", "ProbeResponse", "StatusResponse"} <= models
    assert {"401", "403", "413", "429"} <= set(schema["paths"][PROBE_PATH]["post"]["responses"])


def test_unsigned_request_is_401(miner):
    reply = post(miner.port, probe_body(), signer=None)
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "btauth/1"


def test_request_signed_for_another_miner_is_401(miner):
    reply = post(miner.port, probe_body(), receiver=OUTSIDER.ss58_address)
    assert reply.status_code == 401 and "receiv" in reply.json()["detail"]


def test_tampered_body_is_401(miner):
    body = probe_body()
    auth = http_auth.sign(VALIDATOR, method="POST", path=PROBE_PATH, body=body,
                          receiver_ss58=MINER.ss58_address)
    reply = httpx.post(f"http://127.0.0.1:{miner.port}{PROBE_PATH}", content=probe_body(seed=8),
                       headers=auth)
    assert reply.status_code == 401 and "signature" in reply.json()["detail"]


def test_replayed_nonce_is_401(miner):
    body, nonce = probe_body(), time.time_ns()
    assert post(miner.port, body, nonce=nonce).status_code == 200
    replay = post(miner.port, body, nonce=nonce)
    assert replay.status_code == 401 and "already" in replay.json()["detail"]


def test_stale_nonce_is_401(miner):
    reply = post(miner.port, probe_body(), nonce=time.time_ns() - 60 * 10**9)
    assert reply.status_code == 401 and "older" in reply.json()["detail"]


def test_caller_without_permit_is_403(miner):
    reply = post(miner.port, probe_body(), signer=OUTSIDER)
    assert reply.status_code == 403 and "permit" in reply.json()["detail"]


def test_oversized_body_is_413(miner):
    big = probe_body(padding="x" * MAX_BODY)
    assert post(miner.port, big).status_code == 413
    assert post(miner.port, big, signer=None).status_code == 413  # refused before auth

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield big[:1000]
        yield big[1000:]

    reply = httpx.post(f"http://127.0.0.1:{miner.port}{PROBE_PATH}", content=chunks())
    assert reply.status_code == 413


@pytest.mark.parametrize("body", [
    b"{not json",
    probe_body(seed="7"),
    probe_body(input_ids=[[1, 2, 3], [4, 5]]),
    probe_body(input_ids=[[1]]),
    probe_body(n_coords=10**6),
    probe_body(extra="field"),
    probe_body(input_ids=[[1, 600]]),  # outside the vocabulary: the probe refuses it
])
def test_invalid_requests_are_422(miner, body):
    assert post(miner.port, body).status_code == 422


def nan(body: bytes, field: bytes) -> bytes:
    """``body`` with the first number after ``field`` replaced by a JSON NaN (json.dumps refuses)."""
    head, tail = body.split(field, 1)
    return head + field + tail.replace(tail.lstrip(b'": [').split(b",")[0].split(b"]")[0],
                                       b"NaN", 1)


@pytest.mark.parametrize("body", [
    nan(probe_body(), b'"seed"'),  # FastAPI's own handler cannot echo the NaN back: it was a 500
    probe_body().replace(b'"seed": 7', b'"seed": Infinity'),
    probe_body().replace(b'"seed": 7', b'"seed": -Infinity'),
    nan(probe_body(), b'"input_ids"'),
    nan(probe_body(labels=tokens()), b'"labels"'),
    nan(probe_body(pixel_values={"shape": [1, 3, 2, 2], "data": "AAAA"}), b'"shape"'),
    b'{"seed": 1, "seed": NaN}',
    b"[" * 20_000 + b"]" * 20_000,  # deeper than the JSON parser recurses
    b'{"seed": "\xff\xfe"}',  # not UTF-8
    b"null", b"[]", b'"probe"', b"7", b"",
    probe_body(seed=10**40),
    probe_body(input_ids=[[1, -5]]),  # an image placeholder without pixels
])
def test_malformed_bodies_are_4xx_never_500(miner, body):
    reply = post(miner.port, body, signer=FUZZER)
    assert 400 <= reply.status_code < 500, reply.text
    detail = reply.json()["detail"]  # valid JSON, and none of the input echoed back
    assert isinstance(detail, str) or all(set(item) == {"loc", "msg", "type"} for item in detail)


def test_validation_errors_say_where_and_why(miner):
    detail = post(miner.port, nan(probe_body(), b'"seed"'), signer=FUZZER).json()["detail"]
    assert detail[0]["loc"] == ["body", "seed"] and detail[0]["msg"] and detail[0]["type"]


# --- slow clients -----------------------------------------------------------------------------

REQUEST_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def impatient_miner(model):
    """The miner's app behind a server that gives each request REQUEST_TIMEOUT s to arrive."""
    status = lambda: dict(epoch=EPOCH, peer_id="QmTestPeer", samples_per_second=1.0, device="cpu")
    probe = lambda request: dict(loss=1.0, coords=[], grad_values=[], epoch=EPOCH,
                                 param_digest="00", peer_id="QmTestPeer",
                                 samples_since_last_probe=0)
    app = create_app(MINER, authorize=lambda hotkey: None, probe=probe, status=status,
                     max_body_bytes=MAX_BODY, rate_limit_per_minute=10_000)
    with ApiServer(app, "127.0.0.1", 0, request_timeout_s=REQUEST_TIMEOUT) as server:
        wait_accepting(server.port)
        yield server


def slow_client(port: int, part: str) -> socket.socket:
    """A connection that sent only the start of a signed probe: some headers, or some body."""
    body = probe_body()
    auth = http_auth.sign(VALIDATOR, method="POST", path=PROBE_PATH, body=body,
                          receiver_ss58=MINER.ss58_address)
    head = (f"POST {PROBE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in auth.items()) + "\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head[:40] if part == "headers" else head + body[:10])
    return sock


def trickle_until_closed(sock: socket.socket, give_up_s: float) -> float:
    """Send one byte of the request every 0.2 s, as a slowloris client does; the seconds until
    the server closed the connection."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < give_up_s:
        try:
            sock.send(b"x")
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
    raise AssertionError(f"connection still open after {give_up_s} s")


@pytest.mark.parametrize("part", ["headers", "body"])
def test_slow_requests_are_cut_off(impatient_miner, part):
    clients = [slow_client(impatient_miner.port, part) for _ in range(20)]
    try:
        for sock in clients:
            trickle_until_closed(sock, give_up_s=20 * REQUEST_TIMEOUT)
    finally:
        for sock in clients:
            sock.close()
    reply = post(impatient_miner.port, probe_body())  # a whole request in time is served
    assert reply.status_code == 200


def test_idle_connection_is_closed(impatient_miner):
    with socket.create_connection(("127.0.0.1", impatient_miner.port)) as sock:
        sock.settimeout(20 * REQUEST_TIMEOUT)
        assert sock.recv(1) == b""


def test_deadline_restarts_for_each_request_on_a_connection(impatient_miner):
    with httpx.Client() as client:  # keep-alive: both requests on one connection
        for _ in range(2):
            reply = client.get(f"http://127.0.0.1:{impatient_miner.port}{STATUS_PATH}")
            assert reply.status_code == 200


def test_rate_limit_is_429_per_caller(miner):
    codes = [post(miner.port, b"{}", signer=SPAMMER).status_code for _ in range(RATE + 1)]
    assert codes[:RATE] == [422] * RATE and codes[RATE] == 429
    assert post(miner.port, b"{}", signer=VALIDATOR).status_code == 422  # others unaffected


def test_honest_probe_still_works_after_abuse(miner, model):
    body, nonce = probe_body(), time.time_ns()
    assert post(miner.port, body, nonce=nonce).status_code == 200
    assert post(miner.port, body, nonce=nonce).status_code == 401
    assert post(miner.port, body, signer=None).status_code == 401
    assert post(miner.port, body + b" " * MAX_BODY).status_code == 413
    assert_honest_reply(miner.port, model, seed=99)


def test_taken_port_fails_clearly(miner):
    app = FastAPI()
    with pytest.raises(PortInUse, match=f"port {miner.port} .* already in use"):
        ApiServer(app, "127.0.0.1", miner.port).start()


def test_prober_rejects_wrong_hotkey_for_the_miner(miner):
    request = ProbeRequest(input_ids=tokens(), seed=1, expected_epoch=EPOCH)
    assert probe_one(miner.port, request, hotkey=OUTSIDER.ss58_address) is None


# --- the prober against miners that misbehave -------------------------------------------------

IMPOSTOR = Keypair.create_from_uri("//hivetrain-test-impostor")
REQUEST = ProbeRequest(input_ids=tokens(), seed=1, expected_epoch=EPOCH, n_coords=2)


def signed_answer(headers, body: bytes, signer=MINER, **changes):
    """A well-formed answer bound to the request in ``headers``/``body``."""
    answer = ProbeAnswer(loss=3.5, epoch=EPOCH, param_digest="00", peer_id="QmFake",
                         samples_since_last_probe=0, coords=[(0, 1), (2, 3)],
                         grad_values=[0.5, -0.25])
    return sign_answer(signer, answer, caller_hotkey=headers[http_auth.HEADER_HOTKEY],
                       request_nonce=int(headers[http_auth.HEADER_NONCE]),
                       request_sha256=hashlib.sha256(body).hexdigest()).model_copy(update=changes)


async def slow(headers, body):
    await asyncio.sleep(30)  # released when the server shuts down


BEHAVIOURS = {
    "honest": lambda h, b: signed_answer(h, b).model_dump(mode="json"),
    "slow": slow,
    "garbage": lambda h, b: PlainTextResponse("all good, trust me"),
    "error": lambda h, b: PlainTextResponse("boom", status_code=500),
    "unsigned": lambda h, b: {**signed_answer(h, b).model_dump(mode="json"), "signature": ""},
    "impostor": lambda h, b: signed_answer(h, b, signer=IMPOSTOR,
                                           hotkey=MINER.ss58_address).model_dump(mode="json"),
    "tampered": lambda h, b: signed_answer(h, b, loss=2.0).model_dump(mode="json"),
    "rebound": lambda h, b: signed_answer(h, b[:-1] + b" ").model_dump(mode="json"),
    "huge": lambda h, b: Response(b"[" + b"0," * 600_000 + b"0]", media_type="application/json"),
}


@pytest.fixture(scope="module")
def fake_miner():
    app = FastAPI()
    app.state.behaviour = "honest"

    @app.post(PROBE_PATH)
    async def answer(request: Request):
        result = BEHAVIOURS[app.state.behaviour](request.headers, await request.body())
        return await result if asyncio.iscoroutine(result) else result

    with ApiServer(app, "127.0.0.1", 0, graceful_shutdown_s=0.5) as server:
        wait_accepting(server.port)
        server.app = app
        yield server


def test_fake_miner_honest_answer_is_accepted(fake_miner):
    """The control: the fake is a valid miner until told otherwise, so the rejections count."""
    fake_miner.app.state.behaviour = "honest"
    reply = probe_one(fake_miner.port, REQUEST)
    assert reply is not None and reply.response.peer_id == "QmFake" and reply.latency_s > 0


@pytest.mark.parametrize("behaviour", ["garbage", "error", "unsigned", "impostor", "tampered",
                                       "rebound", "huge"])
def test_prober_rejects_bad_answers(fake_miner, behaviour):
    fake_miner.app.state.behaviour = behaviour
    assert probe_one(fake_miner.port, REQUEST) is None


def test_prober_gives_up_on_a_slow_miner(fake_miner):
    fake_miner.app.state.behaviour = "slow"
    started = time.monotonic()
    assert probe_one(fake_miner.port, REQUEST, timeout=0.5) is None
    assert time.monotonic() - started < 3


def test_prober_down_and_unserved_miners():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    targets = [(1, MINER.ss58_address, "127.0.0.1", closed_port),
               (2, MINER.ss58_address, "0.0.0.0", 8091),
               (3, MINER.ss58_address, "127.0.0.1", 0)]
    replies = asyncio.run(probe_miners(VALIDATOR, targets, REQUEST, 2.0))
    assert replies == {1: None, 2: None, 3: None}



def test_one_call_probes_every_miner_with_its_own_request(miner, model):
    """The validator's round: one call, one client, each uid its own seed and batch; every
    answer is settled (and handed to ``on_reply``) while the call is still running."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    targets = [(1, MINER.ss58_address, "127.0.0.1", miner.port),
               (2, MINER.ss58_address, "127.0.0.1", miner.port),
               (3, MINER.ss58_address, "127.0.0.1", closed_port)]
    requests = {uid: ProbeRequest(input_ids=tokens(seed=uid), seed=100 + uid,
                                  expected_epoch=EPOCH, n_coords=8) for uid in (1, 2, 3)}
    settled = []

    async def on_reply(uid, reply):
        settled.append((uid, reply))

    replies = asyncio.run(probe_miners(VALIDATOR, targets, requests, 10.0, on_reply=on_reply))
    assert sorted(settled, key=lambda item: item[0]) == sorted(replies.items())
    assert replies[3] is None
    for uid in (1, 2):
        local = probe_loss_and_grad(model, torch.tensor(requests[uid].input_ids),
                                    requests[uid].seed, 8)
        answer = replies[uid].response
        assert [tuple(c) for c in answer.coords] == local.coords
        assert abs(answer.loss - local.loss) < 1e-6
    assert replies[1].response.coords != replies[2].response.coords

def test_rate_limit_window_slides():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert [limiter.allow("a"), limiter.allow("a"), limiter.allow("a"), limiter.allow("b")] == [
        True, True, False, True]
    now[0] = 60.5
    assert limiter.allow("a")


# --- callers the metagraph does not know --------------------------------------------------------


@pytest.fixture
def subnet(tmp_path, monkeypatch):
    """A dev chain with a validator (permit, stake) and the miner registered, and a miner app
    whose authorize is the real CallerPolicy over the real Chain facade."""
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))
    wallets = {name: create_dev_wallet(name, "default", str(tmp_path / "wallets"))
               for name in ("owner", "val", "miner", "late")}
    dev, _ = init_dev_chain(tmp_path / "chain.sqlite", 0.05, 1, wallets["owner"])
    for name in ("val", "miner"):
        register_dev(dev.path, 1, wallets[name])
    stake_dev(dev.path, 1, wallets["val"].hotkey.ss58_address, 100.0, permit=True)
    # The facade's own periodic re-read is kept out of the way (a huge cadence): only the
    # policy's refreshes may bring a newly registered hotkey in here.
    chain = Chain.open("embedded", None, str(dev.path), 1, wallets["miner"], connect_timeout=5,
                       metagraph_every_blocks=10**6)
    now = [0.0]
    policy = CallerPolicy(chain, min_stake=0.0, clock=lambda: now[0])
    status = lambda: dict(epoch=EPOCH, peer_id="QmTestPeer", samples_per_second=1.0, device="cpu")
    probe = lambda request: dict(loss=1.0, coords=[], grad_values=[], epoch=EPOCH,
                                 param_digest="00", peer_id="QmTestPeer",
                                 samples_since_last_probe=0)
    app = create_app(wallets["miner"].hotkey, authorize=policy.authorize, probe=probe,
                     status=status, rate_limit_per_minute=10_000)
    with ApiServer(app, "127.0.0.1", 0) as server:
        wait_accepting(server.port)
        yield dict(server=server, policy=policy, now=now, dev=dev, wallets=wallets, chain=chain)
    chain.close()


def test_unknown_hotkeys_cannot_force_metagraph_refreshes(subnet):
    server, policy, wallets = subnet["server"], subnet["policy"], subnet["wallets"]
    miner_hotkey = wallets["miner"].hotkey.ss58_address
    flood = [Keypair.create_from_uri(f"//flood-{i}") for i in range(3 * DEFAULT_REFRESHES_PER_MINUTE)]
    codes = [post(server.port, probe_body(), signer=k, receiver=miner_hotkey).status_code
             for k in flood + flood]
    assert codes == [403] * len(codes)
    assert policy.refreshes == DEFAULT_REFRESHES_PER_MINUTE  # the budget, not one per hotkey
    honest = post(server.port, probe_body(), signer=wallets["val"].hotkey, receiver=miner_hotkey)
    assert honest.status_code == 200


def test_validator_registered_since_the_last_sync_gets_in(subnet):
    server, policy, wallets, now = subnet["server"], subnet["policy"], subnet["wallets"], subnet["now"]
    miner_hotkey, late = wallets["miner"].hotkey.ss58_address, wallets["late"].hotkey
    assert subnet["chain"].metagraph().uid_of(late.ss58_address) is None  # cached without it
    assert post(server.port, probe_body(), signer=late, receiver=miner_hotkey).status_code == 403
    register_dev(subnet["dev"].path, 1, wallets["late"])
    stake_dev(subnet["dev"].path, 1, late.ss58_address, 100.0, permit=True)
    refused = post(server.port, probe_body(), signer=late, receiver=miner_hotkey)
    assert refused.status_code == 403 and policy.refreshes == 1  # remembered as refused
    now[0] += REFUSED_TTL_S + 1
    assert post(server.port, probe_body(), signer=late, receiver=miner_hotkey).status_code == 200
    assert policy.refreshes == 2
