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

import base64
import binascii
import json
from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hivetrain.chain.signing import CRYPTO_TYPE_NAMES, parse_crypto_type, verify_signature
from hivetrain.image_tokens import LOWEST_PLACEHOLDER

PROBE_PATH = "/v1/probe"
STATUS_PATH = "/v1/status"
UPDATE_PATH = "/v1/update"
UPDATE_HEADER = "X-Hivetrain-Update"  # the signed UpdateEnvelope of an update response, as JSON

MAX_BATCH = 16
MAX_SEQ_LEN = 2048
# Bounds the forward/backward a single probe can demand, whatever the shape.
MAX_TOKENS = 8192
MAX_COORDS = 1024
DEFAULT_N_COORDS = 64
MAX_IMAGES = 4 * MAX_BATCH  # interleaved rows may hold several images each
MAX_IMAGE_SIDE = 448
# Bounds the pixels of one probe: 4 images of 336 x 336 (the largest CLIP input) in RGB.
MAX_PIXEL_BYTES = 4 * 3 * 336 * 336
IGNORE_LABEL = -100  # a label the loss skips (image positions, padding)

# Domain separation: a signature made for a probe answer can never pass for anything else.
ANSWER_DOMAIN = b"hivetrain/probe-answer/1\n"
UPDATE_DOMAIN = b"hivetrain/update/1\n"
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# A libp2p peer id in base58 (hivemind's PeerID.to_base58), as committed on chain.
PeerIdText = Annotated[str, Field(pattern=r"^[1-9A-HJ-NP-Za-km-z]{16,128}$")]
# Averaging groups named in an update envelope (the envelope travels in one HTTP header).
MAX_GROUP = 256

# Token ids, or the negative placeholders of an image span (hivetrain.image_tokens).
TokenId = Annotated[int, Field(ge=LOWEST_PLACEHOLDER, lt=2**31)]
TokenRow = Annotated[list[TokenId], Field(min_length=2, max_length=MAX_SEQ_LEN)]
Label = Annotated[int, Field(ge=IGNORE_LABEL, lt=2**31)]
LabelRow = Annotated[list[Label], Field(min_length=2, max_length=MAX_SEQ_LEN)]
Coord = tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]


class ImagePayload(BaseModel):
    """uint8 images ``[n, 3, H, W]``, row-major bytes in base64: exact and about 1.3 x raw."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=4, max_length=4)]
    data: Annotated[str, Field(max_length=(MAX_PIXEL_BYTES + 2) // 3 * 4)]

    @model_validator(mode="after")
    def _consistent(self) -> ImagePayload:
        n, channels, height, width = self.shape
        if n > MAX_IMAGES or channels != 3 or max(height, width) > MAX_IMAGE_SIDE:
            raise ValueError(f"images must be [n<={MAX_IMAGES}, 3, H, W] with sides <= "
                             f"{MAX_IMAGE_SIDE}, got {self.shape}")
        try:
            size = len(base64.b64decode(self.data, validate=True))
        except binascii.Error as error:
            raise ValueError(f"image data is not base64: {error}") from None
        if size != n * channels * height * width:
            raise ValueError(f"image data holds {size} bytes, shape {self.shape} needs "
                             f"{n * channels * height * width}")
        return self


class ProbeRequest(BaseModel):
    """What a validator asks: run the probe on this batch with this seed.

    A text batch is its ``input_ids`` (its own labels); an image-caption batch adds ``labels``
    (-100 where nothing is scored) and the images its spans refer to.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    input_ids: Annotated[list[TokenRow], Field(min_length=1, max_length=MAX_BATCH)] = Field(
        description="[batch, seq] held-out token ids; every row the same length.")
    seed: Annotated[int, Field(ge=0, lt=2**63)] = Field(
        description="Chooses the gradient coordinates (hivetrain.probe.compute.probe_coords).")
    expected_epoch: Annotated[int, Field(ge=0)] = Field(
        description="The swarm epoch the validator's reference model is at.")
    n_coords: Annotated[int, Field(ge=1, le=MAX_COORDS)] = Field(
        DEFAULT_N_COORDS, description="How many gradient entries to return.")
    labels: Optional[Annotated[list[LabelRow], Field(min_length=1, max_length=MAX_BATCH)]] = \
        Field(None, description="[batch, seq] targets, -100 where unscored; default input_ids.")
    pixel_values: Optional[ImagePayload] = Field(
        None, description="The images of the image spans in input_ids, in reading order.")

    @model_validator(mode="after")
    def _rectangular_and_bounded(self) -> ProbeRequest:
        width = len(self.input_ids[0])
        if any(len(row) != width for row in self.input_ids):
            raise ValueError("input_ids rows must all have the same length")
        if width * len(self.input_ids) > MAX_TOKENS:
            raise ValueError(f"input_ids holds more than {MAX_TOKENS} tokens")
        if self.labels is not None and [len(r) for r in self.labels] != [width] * len(self.input_ids):
            raise ValueError("labels must have the shape of input_ids")
        if self.pixel_values is None and any(min(row) < 0 for row in self.input_ids):
            raise ValueError("input_ids hold image placeholders but no pixel_values were sent")
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
    update_epoch: Optional[Annotated[int, Field(ge=0)]] = Field(
        None, description="Epoch of the newest update this miner kept (GET it at /v1/update).")
    update_digest: Optional[Digest] = Field(None, description="Its sha256 (swarm.updates).")
    update_samples: Optional[Annotated[int, Field(ge=0)]] = Field(
        None, description="The samples it claimed for that update in the all-reduce.")

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
        return _signature_valid(self.signed_payload(), self.scheme, self.signature, self.hotkey)


def _signed(signer, model_cls, fields: dict):
    """``model_cls(**fields)`` signed by ``signer`` over its ``signed_payload()``."""
    unsigned = model_cls.model_construct(**fields, hotkey=signer.ss58_address,
                                         scheme=CRYPTO_TYPE_NAMES[signer.crypto_type],
                                         signature="")
    signature = "0x" + bytes(signer.sign(unsigned.signed_payload())).hex()
    return unsigned.model_copy(update={"signature": signature})


def _signature_valid(message: bytes, scheme: str, signature: str, hotkey: str) -> bool:
    try:
        crypto_type = parse_crypto_type(scheme)
        raw = bytes.fromhex(signature.removeprefix("0x"))
        return bool(verify_signature(message, raw, hotkey, crypto_type))
    except ValueError:
        return False


def sign_answer(signer, answer: ProbeAnswer, *, caller_hotkey: str, request_nonce: int,
                request_sha256: str) -> ProbeResponse:
    """Bind ``answer`` to the request it answers and sign it with ``signer`` (the miner hotkey).

    :param signer: a ``bittensor.signing.Signer`` (a hotkey ``Keypair`` is one).
    """
    return _signed(signer, ProbeResponse, dict(
        **answer.model_dump(), caller_hotkey=caller_hotkey, request_nonce=request_nonce,
        request_sha256=request_sha256))


class UpdateRequest(BaseModel):
    """A validator asks for the update (pseudo-gradient) a miner sent for one epoch."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    epoch: Annotated[int, Field(ge=0, lt=2**62)]


class UpdateEnvelope(BaseModel):
    """The signed facts about an update; the body that follows holds its tensors.

    The body is the float32 little-endian bytes of every trainable parameter's update in the
    order of ``model.parameters()`` (``numel`` values in all), streamed, so a 124M-parameter
    update never sits in one JSON document; ``digest`` is their sha256
    (:func:`hivetrain.swarm.updates.update_digest`), so the signature covers every byte.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    epoch: Annotated[int, Field(ge=0)]
    samples: Annotated[int, Field(ge=0)]
    numel: Annotated[int, Field(ge=1)]
    digest: Digest
    # The peers this update was averaged with (this miner's own DHT peer id among them); empty
    # when it averaged alone. Validators check the swarm's outer step against this group.
    group: Annotated[list[PeerIdText], Field(max_length=MAX_GROUP)] = []
    hotkey: str
    caller_hotkey: str
    request_nonce: int
    request_sha256: str
    scheme: str = "sr25519"
    signature: str

    def signed_payload(self) -> bytes:
        fields = self.model_dump(mode="python", exclude={"signature"})
        return UPDATE_DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def signature_valid(self) -> bool:
        return _signature_valid(self.signed_payload(), self.scheme, self.signature, self.hotkey)


def sign_update(signer, *, epoch: int, samples: int, numel: int, digest: str, caller_hotkey: str,
                request_nonce: int, request_sha256: str, group=()) -> UpdateEnvelope:
    """The envelope of one update response, bound to the request it answers."""
    return _signed(signer, UpdateEnvelope, dict(
        epoch=epoch, samples=samples, numel=numel, digest=digest, group=list(group)[:MAX_GROUP],
        caller_hotkey=caller_hotkey,
        request_nonce=request_nonce, request_sha256=request_sha256))


class StatusResponse(BaseModel):
    """Public facts about a miner, for dashboards; carries nothing a probe relies on."""

    version: str
    hotkey: str
    epoch: int
    peer_id: str
    samples_per_second: float
    device: str
    uptime_s: float
    # The run this miner trains and the flags that rebuild its recipe (hivetrain.swarm_run).
    run_id: Optional[str] = None
    recipe: Optional[dict[str, Union[bool, int, float, str, None]]] = None
