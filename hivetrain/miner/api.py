"""The miner's HTTP API: validators probe it, dashboards read its status.

bittensor 11 has no Axon, so the subnet serves its own FastAPI app. Every request except the
public ones passes, in this order, through a guard that is cheapest-first and never does work for
a caller it has not identified:

1. body size (413), checked before anything is parsed or verified;
2. ``btauth/1`` signature (401): bound to this miner's hotkey as receiver, fresh (10 s window)
   and never replayed (a per-app nonce store);
3. per-caller rate limit (429), keyed by the authenticated hotkey, so nobody can spend another
   validator's quota by claiming its hotkey;
4. ``authorize(hotkey)`` (403): the miner's policy, e.g. "registered with a validator permit and
   enough stake";
5. schema validation (422) by FastAPI, so malformed JSON from strangers is never parsed; the
   error lists where and why, never the offending input (a NaN seed cannot be echoed as JSON).

A connection must deliver each whole request (headers and body) within ``request_timeout_s`` of
its start or of the previous response, or it is closed: slow-body and slow-header (slowloris)
clients cannot hold connections open.

Public routes (``GET /v1/status``, ``GET /openapi.json``) skip 2 and 4 and are rate-limited per
client IP: status is what a dashboard shows anyway, and the schema is what a client needs before
it can sign anything. :class:`ApiServer` runs the app with uvicorn on a background thread so the
training loop keeps the main thread.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import logging
import socket
import threading
import time
from collections import defaultdict, deque
from typing import Any, Callable, Optional

import h11
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from uvicorn.protocols.http.h11_impl import H11Protocol

from hivetrain import __version__
from hivetrain.chain.signing import http_auth, resolve_signer
from hivetrain.errors import OperatorError
from hivetrain.probe.schemas import (MAX_PIXEL_BYTES, PROBE_PATH, STATUS_PATH, UPDATE_HEADER,
                                UPDATE_PATH, ProbeAnswer, ProbeRequest, ProbeResponse,
                                StatusResponse, UpdateRequest, sign_answer, sign_update)

logger = logging.getLogger(__name__)

# A full-size text probe (8192 token ids and labels as JSON) is ~120 KiB; images add their base64.
DEFAULT_MAX_BODY_BYTES = 256 * 1024 + (MAX_PIXEL_BYTES + 2) // 3 * 4
# A validator sends a probe and an update request per round; 60 allows a round every 2 s.
DEFAULT_RATE_LIMIT_PER_MINUTE = 60
UPDATE_CHUNK_BYTES = 1 << 20
# A validator sends a whole probe (at most a few hundred KiB) in well under a second.
DEFAULT_REQUEST_TIMEOUT_S = 10.0
MAX_LISTED_ERRORS = 10
PUBLIC_PATHS = frozenset({STATUS_PATH, "/openapi.json"})


class RateLimiter:
    """Sliding one-minute window per key; thread-safe, forgets keys that fall idle."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        if per_minute < 1:
            raise ValueError(f"rate limit must allow at least 1 request a minute, got {per_minute}")
        self.per_minute, self.clock = per_minute, clock
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            if len(self._hits) > 10_000:  # drop idle keys so spoofed IPs cannot grow memory
                for stale in [k for k, h in self._hits.items() if not h or h[-1] <= now - 60]:
                    del self._hits[stale]
            hits = self._hits[key]
            while hits and hits[0] <= now - 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return False
            hits.append(now)
            return True


class _Guard:
    """Pure ASGI middleware doing steps 1-4 of the module docstring, then replaying the body."""

    def __init__(self, app, *, hotkey: str, authorize: Callable[[str], Optional[str]],
                 max_body_bytes: int, limiter: RateLimiter):
        self.app, self.hotkey, self.authorize = app, hotkey, authorize
        self.max_body_bytes, self.limiter = max_body_bytes, limiter
        self.nonces = http_auth.InMemoryNonceStore()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > self.max_body_bytes:
            return await _reject(scope, receive, send, 413, "request body too large")
        body = await self._read_body(receive)
        if body is _DISCONNECTED:  # the client left, or its connection ran out of time
            return
        if body is None:
            return await _reject(scope, receive, send, 413, "request body too large")
        public = scope["path"] in PUBLIC_PATHS
        if public:
            key = "ip:" + (scope.get("client") or ("?", 0))[0]
        else:
            target = scope.get("raw_path") or scope["path"].encode()
            if scope.get("query_string"):
                target += b"?" + scope["query_string"]
            try:
                caller = http_auth.verify(headers, body, method=scope["method"],
                                          path=target.decode("latin-1"),
                                          self_hotkey_ss58=self.hotkey, nonce_store=self.nonces)
            except http_auth.AuthError as error:  # its messages are safe to return
                return await _reject(scope, receive, send, 401, str(error),
                                     {"WWW-Authenticate": http_auth.PROTOCOL})
            key = caller.hotkey_ss58
        if not self.limiter.allow(key):
            return await _reject(scope, receive, send, 429, "rate limit exceeded",
                                 {"Retry-After": "60"})
        if not public:
            reason = await run_in_threadpool(self.authorize, caller.hotkey_ss58)
            if reason is not None:
                return await _reject(scope, receive, send, 403, reason)
            scope.setdefault("state", {}).update(
                caller=caller.hotkey_ss58, nonce=caller.nonce_ns,
                body_sha256=hashlib.sha256(body).hexdigest())
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive) -> Optional[bytes]:
        """The whole body, None once it passes the limit (a lying Content-Length included), or
        ``_DISCONNECTED``."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return _DISCONNECTED
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return None
            more = message.get("more_body", False)
        return b"".join(chunks)


_DISCONNECTED = b"<disconnected>"  # compared by identity, never a body


def _replay(body: bytes, receive):
    """An ASGI ``receive`` that yields the already-read body once, then defers to the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


async def _reject(scope, receive, send, status: int, detail: str, headers=None) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    await response(scope, receive, send)


async def _validation_failed(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 naming each bad field and why, without FastAPI's echo of the input.

    The echo is what turned a NaN seed into a 500 (JSON cannot encode it); it also sent a
    stranger's body back to them.
    """
    problems = [{"loc": [part if isinstance(part, int) else str(part) for part in e.get("loc", ())],
                 "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                for e in error.errors()[:MAX_LISTED_ERRORS]]
    return JSONResponse({"detail": problems}, status_code=422)


_GUARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid, stale or replayed btauth/1 signature, or one made "
                         "for another receiver."},
    403: {"description": "Authenticated, but the miner's policy refuses this hotkey."},
    413: {"description": "Request body over the miner's limit."},
    429: {"description": "Too many requests from this hotkey (or IP, on public routes)."},
}


def create_app(keypair, *, authorize: Callable[[str], Optional[str]],
               probe: Callable[[ProbeRequest], dict], status: Callable[[], dict],
               update: Optional[Callable[[int], Any]] = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               rate_limit_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE) -> FastAPI:
    """Build the miner's app.

    :param keypair: the miner's hotkey (a ``Keypair``, or a ``bittensor.Wallet``); requests must be
        signed for it as receiver, and probe answers are signed with it.
    :param authorize: ``caller_hotkey -> None`` to allow, or the refusal reason (sent with 403).
    :param probe: runs the probe (hivetrain.probe.compute) on the current model and returns the
        :class:`~hivetrain.probe.schemas.ProbeAnswer` fields. Called from a worker thread, one call at
        a time; it must read a consistent copy of the model (the miner probes the copy its
        trainer publishes at each epoch). A ``ValueError`` becomes a 422.
    :param status: returns ``epoch``, ``peer_id``, ``samples_per_second`` and ``device``.
    :param update: ``epoch -> hivetrain.swarm.updates.Update`` (or None when this miner kept
        none for that epoch: a 404), served at ``POST /v1/update``; no route when omitted.
    """
    signer = resolve_signer(keypair, role="hotkey")
    started = time.monotonic()
    probe_lock = threading.Lock()  # probes share the device with training; never run two at once
    app = FastAPI(title="hivetrain miner", version=__version__, docs_url=None, redoc_url=None,
                  description="Requests other than GET /v1/status and GET /openapi.json must be "
                              "signed with bittensor.http_auth (btauth/1), receiver = this "
                              "miner's hotkey.")

    @app.post(PROBE_PATH, response_model=ProbeResponse, responses=_GUARD_RESPONSES)
    def run_probe(body: ProbeRequest, request: Request) -> Response:
        """Loss and seeded gradient coordinates on the given batch, signed by the miner."""
        with probe_lock:
            try:
                raw = probe(body)
            except ValueError as error:
                raise HTTPException(422, str(error)) from None
        answer = ProbeAnswer.model_validate(raw, strict=False)
        state = request.state
        signed = sign_answer(signer, answer, caller_hotkey=state.caller,
                             request_nonce=state.nonce, request_sha256=state.body_sha256)
        # Serialised by pydantic, not Starlette's json.dumps, so a NaN loss is sent, not a 500.
        return Response(signed.model_dump_json(), media_type="application/json")

    if update is not None:
        @app.post(UPDATE_PATH, responses={**_GUARD_RESPONSES, 404: {
            "description": "This miner kept no update for that epoch."}})
        def get_update(body: UpdateRequest, request: Request) -> Response:
            """The update sent for ``epoch``: float32 bytes, signed envelope in a header."""
            kept = update(body.epoch)
            if kept is None:
                raise HTTPException(404, f"no update kept for epoch {body.epoch}")
            state = request.state
            envelope = sign_update(signer, epoch=kept.epoch, samples=kept.samples,
                                   numel=sum(t.numel() for t in kept.tensors), digest=kept.digest,
                                   group=kept.group,
                                   caller_hotkey=state.caller, request_nonce=state.nonce,
                                   request_sha256=state.body_sha256)
            return StreamingResponse(_chunks(kept.tensors), media_type="application/octet-stream",
                                     headers={UPDATE_HEADER: envelope.model_dump_json()})

    @app.get(STATUS_PATH, response_model=StatusResponse, responses={429: _GUARD_RESPONSES[429]})
    def get_status() -> StatusResponse:
        """Public, unauthenticated: version, epoch and throughput, as a dashboard shows them."""
        return StatusResponse(version=__version__, hotkey=signer.ss58_address,
                              uptime_s=time.monotonic() - started, **status())

    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_middleware(_Guard, hotkey=signer.ss58_address, authorize=authorize,
                       max_body_bytes=max_body_bytes,
                       limiter=RateLimiter(rate_limit_per_minute))
    return app


class _DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for each request to arrive in full.

    uvicorn times out idle keep-alive connections only: a client that trickles headers or body
    keeps its connection (and a slot of the miner's) forever. The deadline starts when the
    connection opens and again after each response, stops once the whole request is in, and
    closes the connection when it passes.
    """

    def __init__(self, *args, request_timeout_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.request_timeout_s = request_timeout_s
        self._deadline: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._awaiting_request():
            self._disarm()  # the request is in (or the connection is done): the app has it now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._awaiting_request():
            self._arm()

    def _awaiting_request(self) -> bool:
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.debug("closing a connection from %s: no whole request within %.0f s",
                         self.client, self.request_timeout_s)
            self.transport.close()


def _chunks(tensors):
    """The tensors' float32 bytes in order, at most :data:`UPDATE_CHUNK_BYTES` per chunk."""
    for tensor in tensors:
        raw = tensor.detach().to("cpu").float().contiguous().numpy().tobytes()
        for start in range(0, len(raw), UPDATE_CHUNK_BYTES):
            yield raw[start:start + UPDATE_CHUNK_BYTES]


class PortInUse(OperatorError, OSError):
    """The API port is taken; the message says which and how to find the holder."""


class ApiServer:
    """uvicorn on a daemon thread, so the training loop keeps the main thread.

    The listening socket is bound in :meth:`start` itself, so a taken port fails there with
    :class:`PortInUse` instead of inside the thread, and ``port=0`` picks a free port
    (read it back from :attr:`port`).
    """

    def __init__(self, app, host: str = "0.0.0.0", port: int = 8091, *,
                 graceful_shutdown_s: float = 5.0,
                 request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S):
        self.host, self.requested_port = host, port
        # log_config=None: leave the host process's logging configuration alone.
        self.server = uvicorn.Server(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=graceful_shutdown_s,
            http=functools.partial(_DeadlineH11Protocol, request_timeout_s=request_timeout_s)))
        self.port: Optional[int] = None
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def start(self, timeout: float = 10.0) -> ApiServer:
        sock = self._bind()
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True,
                                        name=f"miner-api:{self.port}")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"miner API on {self.host}:{self.port} did not start"
                                   + (f": {self._error!r}" if self._error else ""))
            time.sleep(0.01)
        logger.info("miner API listening on %s:%d", self.host, self.port)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
            sock.listen(128)  # connections queue from here on, even before uvicorn accepts
        except OSError as error:
            sock.close()
            if error.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(f"port {self.requested_port} on {self.host} is already in use; pick "
                            f"another --axon.port or stop the process holding it "
                            f"(ss -ltnp | grep {self.requested_port})") from None
        return sock

    def _run(self, sock: socket.socket) -> None:
        try:
            self.server.run(sockets=[sock])
        except BaseException as error:  # reported by start(); a thread has nowhere else to raise
            self._error = error
            logger.exception("miner API stopped")
        finally:
            sock.close()  # uvicorn closes it on a clean shutdown; this covers a failed start
