"""The miner-validator wire contract: request and response schemas, and the signed probe answer.

Both sides import these models, so the miner's API (``hivetrain.miner.api``) and the validator's
client (``hivetrain.validator.prober``) cannot drift apart. Requests are authenticated at the
HTTP layer with ``bittensor.http_auth`` (``btauth/1``); the *answer* carries its own signature by
the miner's hotkey over a canonical JSON form, bound to the exact request it answers (caller,
nonce, body hash), so a validator can keep it and later prove what the miner claimed.

Every list is bounded so that a request's cost and a response's size are known before any
work is done.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hivetrain.chain.signing import CRYPTO_TYPE_NAMES, parse_crypto_type, verify_signature

PROBE_PATH = "/v1/probe"
STATUS_PATH = "/v1/status"

MAX_BATCH = 16
MAX_SEQ_LEN = 2048
# Bounds the forward/backward a single probe can demand, whatever the shape.
MAX_TOKENS = 8192
MAX_COORDS = 1024
DEFAULT_N_COORDS = 64

# Domain separation: a signature made for a probe answer can never pass for anything else.
ANSWER_DOMAIN = b"hivetrain/probe-answer/1\n"

TokenId = Annotated[int, Field(ge=0, lt=2**31)]
TokenRow = Annotated[list[TokenId], Field(min_length=2, max_length=MAX_SEQ_LEN)]
Coord = tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]


class ProbeRequest(BaseModel):
    """What a validator asks: run the probe on these tokens with this seed."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    input_ids: Annotated[list[TokenRow], Field(min_length=1, max_length=MAX_BATCH)] = Field(
        description="[batch, seq] held-out token ids; every row the same length.")
    seed: Annotated[int, Field(ge=0, lt=2**63)] = Field(
        description="Chooses the gradient coordinates (hivetrain.model.probe.probe_coords).")
    expected_epoch: Annotated[int, Field(ge=0)] = Field(
        description="The swarm epoch the validator's reference model is at.")
    n_coords: Annotated[int, Field(ge=1, le=MAX_COORDS)] = Field(
        DEFAULT_N_COORDS, description="How many gradient entries to return.")

    @model_validator(mode="after")
    def _rectangular_and_bounded(self) -> ProbeRequest:
        width = len(self.input_ids[0])
        if any(len(row) != width for row in self.input_ids):
            raise ValueError("input_ids rows must all have the same length")
        if width * len(self.input_ids) > MAX_TOKENS:
            raise ValueError(f"input_ids holds more than {MAX_TOKENS} tokens")
        return self


class ProbeAnswer(BaseModel):
    """What the miner computed; the part its probe function returns."""

    model_config = ConfigDict(strict=True, extra="forbid", ser_json_inf_nan="constants")

    loss: float = Field(description="Loss on the batch; NaN/Infinity are sent as JSON constants.")
    epoch: Annotated[int, Field(ge=0)]
    param_digest: Annotated[str, Field(max_length=64)]
    peer_id: Annotated[str, Field(max_length=128)]
    samples_since_last_probe: Annotated[int, Field(ge=0)]
    coords: Annotated[list[Coord], Field(max_length=MAX_COORDS)] = Field(
        description="(param_index, flat_index) over trainable parameters sorted by name.")
    grad_values: Annotated[list[float], Field(max_length=MAX_COORDS)]

    @model_validator(mode="after")
    def _one_value_per_coord(self) -> ProbeAnswer:
        if len(self.coords) != len(self.grad_values):
            raise ValueError("coords and grad_values differ in length")
        return self


class ProbeResponse(ProbeAnswer):
    """The answer plus who gave it, which request it answers, and the miner's signature."""

    hotkey: str = Field(description="The miner's hotkey ss58, which signed this answer.")
    caller_hotkey: str = Field(description="The validator hotkey that sent the request.")
    request_nonce: int = Field(description="The request's X-Bittensor-Nonce.")
    request_sha256: str = Field(description="Lowercase hex sha256 of the raw request body.")
    scheme: str = Field("sr25519", description="Signature scheme of the miner's hotkey.")
    signature: str = Field(description="0x-hex signature over signed_payload().")

    def signed_payload(self) -> bytes:
        """The exact bytes signed: a domain tag, then sorted compact JSON of every other field."""
        fields = self.model_dump(mode="python", exclude={"signature"})
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=True)
        return ANSWER_DOMAIN + text.encode()

    def signature_valid(self) -> bool:
        """Whether ``signature`` verifies under ``hotkey``; malformed input is simply invalid."""
        try:
            crypto_type = parse_crypto_type(self.scheme)
            signature = bytes.fromhex(self.signature.removeprefix("0x"))
            return bool(verify_signature(self.signed_payload(), signature, self.hotkey,
                                         crypto_type))
        except ValueError:
            return False


def sign_answer(signer, answer: ProbeAnswer, *, caller_hotkey: str, request_nonce: int,
                request_sha256: str) -> ProbeResponse:
    """Bind ``answer`` to the request it answers and sign it with ``signer`` (the miner hotkey).

    :param signer: a ``bittensor.signing.Signer`` (a hotkey ``Keypair`` is one).
    """
    unsigned = ProbeResponse.model_construct(
        **answer.model_dump(), hotkey=signer.ss58_address, caller_hotkey=caller_hotkey,
        request_nonce=request_nonce, request_sha256=request_sha256,
        scheme=CRYPTO_TYPE_NAMES[signer.crypto_type], signature="")
    signature = "0x" + bytes(signer.sign(unsigned.signed_payload())).hex()
    return unsigned.model_copy(update={"signature": signature})


class StatusResponse(BaseModel):
    """Public facts about a miner, for dashboards; carries nothing a probe relies on."""

    version: str
    hotkey: str
    epoch: int
    peer_id: str
    samples_per_second: float
    device: str
    uptime_s: float
