"""An embedded dev chain: the bittensor SDK's ``Substrate`` protocol over one SQLite file.

``bt.Subtensor(network, substrate=DevChain.open(path))`` runs the real SDK code unchanged:
reads, the metagraph runtime call, ``plan``/``execute`` of intents (including the MEV-shielded
path ``BurnedRegister`` requires) and ``submit_call``. Only the layer below the SDK's seam is
replaced, so what hivetrain does against the dev chain is what it does against subtensor.

How the protocol maps onto the file:

* reads (``query``/``query_map``/``query_batch``/``runtime_call``) answer from the tables via
  :mod:`devchain_storage`; a ``block_hash`` must name a block of this chain at or below the head,
  but state is not versioned, so every read sees the head state;
* ``compose`` turns a generated call into ``CallBytes`` holding canonical JSON (no SCALE);
* ``submit`` signs with the caller's keypair, verifies that signature, checks the nonce, then
  dispatches the call (:mod:`devchain_runtime`) in one ``BEGIN IMMEDIATE`` transaction and
  records the extrinsic and its events, so ``find_extrinsic``/``events``/``get_block`` can
  report it later, from any process;
* the MEV shield: ``mev_next_key`` is a valid all-zero ML-KEM key, ``sign_extrinsic`` keeps the
  signed inner extrinsic in this object, and the ``submit_encrypted`` carrier executes it in the
  same block, standing in for the block author who would decrypt it (so the shielded submission
  must go through the same ``DevChain`` object that signed it, as the SDK always does);
* blocks are never produced: the head is ``floor((now - genesis) / block_time)``; finality is
  instant; epochs run lazily at the first access past their block.

Not supported (a clear ``bt.ChainError``): SCALE decoding, out-of-process signing
(``prepare``/``submit_signature``), multisig, runtime APIs other than the metagraph, and calls
other than the ones listed in ``devchain_runtime.CALLS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional

import bittensor as bt
import bittensor_core
from bittensor._generated.errors import ERRORS
from bittensor._transport.contract import CallBytes, SignedExtrinsic
from bittensor.settings import DEFAULT_ERA_PERIOD

from hivetrain.chain import devchain_runtime as runtime
from hivetrain.chain import devchain_storage as storage
from hivetrain.chain.devchain_store import Store, dumps
from hivetrain.chain.errors import ChainError

SPEC_VERSION = 1
MLKEM768_PUBLIC_KEY_BYTES = 1184
_CONSTANTS = {("Commitments", "MaxFields"): runtime.MAX_COMMITMENT_FIELDS}
_ERROR_INDEX = {(info.pallet, info.name): key for key, info in ERRORS.items()}
_ERROR_DOCS: dict[str, str] = {}
for _info in ERRORS.values():
    _ERROR_DOCS.setdefault(_info.name, _info.docs)
_POOL_REJECTIONS = {
    "Stale": "Transaction is outdated",
    "Future": "Transaction will be valid in the future",
    "BadProof": "Transaction has a bad signature",
}


def _unsupported(what: str) -> bt.ChainError:
    return bt.ChainError(f"{what} is not modelled by the hivetrain dev chain (see docs/chain.md)")


@dataclass(frozen=True)
class _Signed:
    """A signed dev-chain extrinsic; ``raw`` is its wire form, ``hash`` its blake2b-256."""

    call: bytes
    address: str
    nonce: int
    signature: bytes
    crypto_type: int

    @property
    def raw(self) -> bytes:
        return dumps({"call": self.call.decode(), "address": self.address, "nonce": self.nonce,
                      "signature": self.signature.hex(), "crypto_type": self.crypto_type}).encode()

    @property
    def hash(self) -> str:
        return "0x" + hashlib.blake2b(self.raw, digest_size=32).hexdigest()

    @classmethod
    def from_raw(cls, raw: bytes) -> "_Signed":
        data = json.loads(raw)
        return cls(data["call"].encode(), data["address"], int(data["nonce"]),
                   bytes.fromhex(data["signature"]), int(data["crypto_type"]))


def _jsonable(value: Any) -> Any:
    """Call parameters as JSON-native values: bytes become 0x-hex, nested calls their JSON."""
    if isinstance(value, CallBytes):
        return json.loads(value.data)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class DevChain:
    """The dev chain: dev tooling (sync methods) plus the SDK ``Substrate`` protocol (async)."""

    def __init__(self, store: Store):
        self.store = store
        self.token_symbols: dict[int, str] = {}
        self._pending_inner: dict[tuple[str, int], _Signed] = {}

    @classmethod
    def open(cls, path: str | os.PathLike) -> "DevChain":
        """Open an existing chain file; :class:`ChainError` if missing, corrupt or foreign."""
        return cls(Store.open(path))

    @classmethod
    def create(cls, path: str | os.PathLike, block_time: float) -> "DevChain":
        """Create the chain file, or open it when it already holds a dev chain."""
        return cls(Store.create(path, block_time))

    @property
    def path(self):
        return self.store.path

    # Dev tooling: direct state edits, like sudo on a local subtensor -------------------------

    def head(self) -> int:
        return self.store.head()

    def _edit(self, change):
        with self.store.write() as conn:
            head = self.store.head()
            runtime.run_due_epochs(conn, head)
            try:
                return change(conn, head)
            except runtime.DispatchError as error:
                docs = _ERROR_DOCS.get(error.name, "")
                raise ChainError(f"dev chain refused: {error.name}: {docs}") from None

    def create_subnet(self, netuid: int, owner_coldkey: str, owner_hotkey: str,
                      params: runtime.SubnetParams | None = None) -> bool:
        """Create subnet ``netuid`` (commit-reveal off); False when it already exists."""
        params = params or runtime.SubnetParams()
        try:
            params.check()
        except ValueError as error:
            raise ChainError(f"invalid subnet hyperparameters: {error}") from None

        return self._edit(lambda conn, head: runtime.create_subnet(conn, netuid, params, owner_coldkey,
                                                                  owner_hotkey, head))

    def register(self, netuid: int, hotkey: str, coldkey: str) -> int:
        """Register without an extrinsic (no signature needed); returns the uid."""
        return self._edit(lambda conn, head: runtime.register(conn, netuid, hotkey, coldkey, head)[0])

    def add_stake(self, netuid: int, hotkey: str, tao: float) -> int:
        """Add ``tao`` of stake to ``hotkey`` on ``netuid``; returns its new stake in rao."""
        rao = int(round(tao * 1e9))

        def change(conn, head):
            runtime.subnet_row(conn, netuid)
            conn.execute("INSERT INTO stake (netuid, hotkey, rao) VALUES (?, ?, ?) "
                         "ON CONFLICT (netuid, hotkey) DO UPDATE SET rao = rao + excluded.rao",
                         (netuid, hotkey, rao))
            return conn.execute("SELECT rao FROM stake WHERE netuid = ? AND hotkey = ?",
                                (netuid, hotkey)).fetchone()[0]
        return self._edit(change)

    def set_validator_permit(self, netuid: int, hotkey: str, permit: bool = True) -> None:
        def change(conn, head):
            if runtime.uid_of(conn, netuid, hotkey) is None:
                raise runtime.DispatchError("HotKeyNotRegisteredInSubNet")
            conn.execute("UPDATE neurons SET validator_permit = ? WHERE netuid = ? AND hotkey = ?",
                         (int(permit), netuid, hotkey))
        self._edit(change)

    # Substrate protocol: lifecycle and chain metadata -----------------------------------------

    def balance(self, rao: int, netuid: int = 0) -> bt.Balance:
        return bt.Balance(int(rao), netuid, self.token_symbols.get(netuid) if netuid else None)

    async def connect(self) -> None:
        """Nothing to dial: the file was validated when this object was opened."""

    async def close(self) -> None:
        self._pending_inner.clear()

    async def block_hash(self, block: Optional[int] = None) -> Optional[str]:
        head = self.store.head()
        number = head if block is None else int(block)
        return self.store.block_hash(number) if 0 <= number <= head else None

    async def block_number(self) -> int:
        return self.store.head()

    async def finalized_block_number(self) -> int:
        return self.store.head()

    async def block_time(self) -> float:
        return self.store.block_time

    async def spec_version(self) -> int:
        return SPEC_VERSION

    def _block_of(self, block_hash: Optional[str]) -> int:
        if block_hash is None:
            return self.store.head()
        try:
            return self.store.block_of_hash(block_hash)
        except LookupError as error:
            raise bt.ChainError(str(error)) from None

    async def get_block(self, block_number: Optional[int] = None,
                        block_hash: Optional[str] = None) -> Optional[dict]:
        number = self._block_of(block_hash) if block_number is None else int(block_number)
        if not 0 <= number <= self.store.head():
            return None
        timestamp = {"call": {"call_module": "Timestamp", "call_function": "set",
                              "call_args": [{"name": "now", "value": self.store.block_timestamp_ms(number)}]}}
        with self.store.read() as conn:
            rows = conn.execute("SELECT hash, signer, call FROM extrinsics WHERE block = ? ORDER BY idx",
                                (number,)).fetchall()
        extrinsics = [timestamp] + [
            {"extrinsic_hash": r["hash"], "address": r["signer"],
             "call": {"call_module": c["module"], "call_function": c["function"],
                      "call_args": [{"name": k, "value": v} for k, v in c["params"].items()]}}
            for r in rows for c in [json.loads(r["call"])]
        ]
        return {"header": self._header(number), "extrinsics": extrinsics}

    def _header(self, number: int) -> dict:
        parent = self.store.block_hash(number - 1) if number > 0 else "0x" + "00" * 32
        return {"number": number, "hash": self.store.block_hash(number), "parentHash": parent}

    async def blocks(self, *, finalized: bool = False) -> AsyncIterator[dict]:
        """The current head, then every new block in order (finality is instant)."""
        last = self.store.head() - 1
        while True:
            head = self.store.head()
            for number in range(last + 1, head + 1):
                yield {"header": self._header(number)}
            last = max(last, head)
            await asyncio.sleep(min(self.store.block_time / 4, 0.5))

    async def events(self, block_hash: Optional[str] = None) -> list[dict]:
        number = self._block_of(block_hash)
        with self.store.read() as conn:
            rows = conn.execute("SELECT events FROM extrinsics WHERE block = ? ORDER BY idx",
                                (number,)).fetchall()
        return [record for row in rows for record in json.loads(row[0])]

    # Substrate protocol: reads ----------------------------------------------------------------

    def _read(self, block_hash: Optional[str], reader):
        """Run ``reader(conn, block)`` after any due epoch, in one read transaction.

        ``block`` is the height ``block_hash`` names (the head without one); the state read is
        always the head state, since the dev chain keeps no history.
        """
        block = self._block_of(block_hash)
        with self.store.read() as conn:
            due = runtime.epochs_due(conn, self.store.head())
        if due:
            with self.store.write() as conn:
                runtime.run_due_epochs(conn, self.store.head())
        with self.store.read() as conn:
            return reader(conn, block)

    async def query(self, module: str, storage_function: str, params: Optional[list] = None,
                    block_hash: Optional[str] = None) -> Any:
        if (module, storage_function) == ("Timestamp", "Now"):
            return self.store.block_timestamp_ms(self._block_of(block_hash))
        return self._read(block_hash, lambda conn, block: storage.query(
            conn, block, module, storage_function, params or []))

    async def map_has_entries(self, module: str, storage_function: str, params: list,
                              block_hash: Optional[str] = None) -> bool:
        return bool(await self.query_map(module, storage_function, params, block_hash))

    async def query_map(self, module: str, storage_function: str, params: Optional[list] = None,
                        block_hash: Optional[str] = None) -> list[tuple[Any, Any]]:
        return self._read(block_hash, lambda conn, block: storage.query_map(
            conn, block, module, storage_function, params or []))

    async def query_batch(self, module: str, storage_function: str, param_sets: list[list],
                          block_hash: Optional[str] = None) -> list[Any]:
        return self._read(block_hash, lambda conn, block: [
            storage.query(conn, block, module, storage_function, params) for params in param_sets])

    async def runtime_call(self, api: str, method: str, params: list,
                           block_hash: Optional[str] = None) -> Any:
        if (api, method) != ("SubnetInfoRuntimeApi", "get_metagraph"):
            raise _unsupported(f"runtime API {api}.{method}")
        return self._read(block_hash, lambda conn, block: storage.metagraph(conn, block, int(params[0])))

    async def constant(self, module: str, name: str) -> Any:
        if (module, name) not in _CONSTANTS:
            raise _unsupported(f"constant {module}.{name}")
        return _CONSTANTS[(module, name)]

    async def decode_scale(self, type_string: str, data: Any) -> Any:
        raise _unsupported("SCALE decoding")

    # Substrate protocol: calls and fees ---------------------------------------------------------

    async def compose(self, call) -> CallBytes:
        module, function, params = call
        if (module, function) not in runtime.CALLS:
            raise _unsupported(f"call {module}.{function}")
        params = _jsonable(dict(params))
        if (module, function) == ("Commitments", "set_commitment"):
            try:
                params["info"] = {"fields": runtime.normalize_commitment_fields(params.get("info"))}
            except ValueError as error:
                raise bt.ChainError(f"cannot encode Commitments.set_commitment: {error}") from None
        body = {"module": module, "function": function, "params": params}
        return CallBytes(dumps(body).encode(), SPEC_VERSION)

    async def estimate_fee(self, call, keypair) -> bt.Balance:
        return bt.Balance.from_rao(0)  # the dev chain charges no fees

    async def estimate_weight(self, call, keypair) -> dict:
        return {"ref_time": 0, "proof_size": 0}

    async def account_next_index(self, address: str) -> int:
        with self.store.read() as conn:
            row = conn.execute("SELECT nonce FROM nonces WHERE address = ?", (address,)).fetchone()
        return 0 if row is None else row[0]

    # Substrate protocol: writes -----------------------------------------------------------------

    async def mev_next_key(self) -> Optional[bytes]:
        return bytes(MLKEM768_PUBLIC_KEY_BYTES)

    def _payload(self, call: bytes, nonce: int) -> bytes:
        return b"/".join([b"hivetrain-devchain", self.store.chain_id.encode(), str(nonce).encode(), call])

    async def _sign(self, call: CallBytes, keypair, nonce: Optional[int]) -> _Signed:
        if nonce is None:
            nonce = await self.account_next_index(keypair.ss58_address)
        try:
            signature = bytes(keypair.sign(self._payload(call.data, nonce)))
        except Exception as error:  # locked keyfile, wrong password, broken signer
            raise bt.ChainError(f"could not sign with {keypair.ss58_address}: {error}") from error
        return _Signed(call.data, keypair.ss58_address, nonce, signature, int(keypair.crypto_type))

    async def sign_extrinsic(self, call, keypair, *, nonce: int, period: int) -> tuple[bytes, str]:
        signed = await self._sign(call, keypair, nonce)
        self._pending_inner[(signed.address, signed.nonce)] = signed
        return signed.raw, signed.hash

    async def find_extrinsic(self, extrinsic_hash: str, block_hash: str) -> Optional[bt.ExtrinsicResult]:
        number = self._block_of(block_hash)
        with self.store.read() as conn:
            row = conn.execute("SELECT * FROM extrinsics WHERE hash = ? AND block = ?",
                               (extrinsic_hash, number)).fetchone()
        return None if row is None else self._result(row)

    async def prepare(self, call, **kwargs):
        raise _unsupported("out-of-process signing (prepare)")

    async def submit_signature(self, unsigned, signature, **kwargs) -> bt.ExtrinsicResult:
        raise _unsupported("out-of-process signing (submit_signature)")

    async def submit(self, call, keypair, *, nonce: Optional[int] = None,
                     period: Optional[int] = DEFAULT_ERA_PERIOD, wait_for_inclusion: bool = True,
                     wait_for_finalization: bool = True) -> bt.ExtrinsicResult:
        signed = await self._sign(call, keypair, nonce)
        return self._report(self._include(signed), wait_for_inclusion or wait_for_finalization)

    async def submit_signed(self, extrinsic: SignedExtrinsic, keypair, *, wait_for_inclusion: bool = True,
                            wait_for_finalization: bool = True) -> bt.ExtrinsicResult:
        return self._report(self._include(_Signed.from_raw(extrinsic.data)),
                            wait_for_inclusion or wait_for_finalization)

    def multisig_account(self, signatories: list[str], threshold: int):
        raise _unsupported("multisig")

    async def submit_multisig(self, call, keypair, multisig_account, **kwargs) -> bt.ExtrinsicResult:
        raise _unsupported("multisig")

    @staticmethod
    def _report(result: bt.ExtrinsicResult, waited: bool) -> bt.ExtrinsicResult:
        if waited or not result.success:
            return result
        return bt.ExtrinsicResult(success=True, message="Submitted (not waiting).")

    def _include(self, signed: _Signed) -> bt.ExtrinsicResult:
        """Verify, dispatch and record ``signed`` in the head block (and a shielded carrier's
        inner extrinsic right after it); returns the carrier's or the plain call's result."""
        with self.store.write() as conn:
            head = self.store.head()
            runtime.run_due_epochs(conn, head)
            result = self._apply(conn, signed, head)
            call = json.loads(signed.call)
            if result.success and (call["module"], call["function"]) == ("MevShield", "submit_encrypted"):
                inner = self._pending_inner.pop((signed.address, signed.nonce + 1), None)
                if inner is not None:
                    self._apply(conn, inner, head)
            return result

    def _apply(self, conn, signed: _Signed, head: int) -> bt.ExtrinsicResult:
        if not bittensor_core.verify(self._payload(signed.call, signed.nonce), signed.signature,
                                     signed.address, signed.crypto_type):
            return self._rejection("BadProof")
        row = conn.execute("SELECT nonce FROM nonces WHERE address = ?", (signed.address,)).fetchone()
        expected = 0 if row is None else row[0]
        if signed.nonce != expected:
            return self._rejection("Stale" if signed.nonce < expected else "Future")
        call = json.loads(signed.call)
        # Index 0 of every block is its Timestamp.set inherent (see get_block).
        idx = conn.execute("SELECT COALESCE(MAX(idx) + 1, 1) FROM extrinsics WHERE block = ?",
                           (head,)).fetchone()[0]
        conn.execute("SAVEPOINT dispatch")
        try:
            dispatch = runtime.CALLS[(call["module"], call["function"])]
            events = dispatch(conn, signed.address, call["params"], head)
            error = None
        except runtime.DispatchError as failure:
            conn.execute("ROLLBACK TO dispatch")
            events, error = [], failure.name
        conn.execute("RELEASE dispatch")
        conn.execute("INSERT INTO nonces (address, nonce) VALUES (?, ?) ON CONFLICT (address) DO UPDATE "
                     "SET nonce = excluded.nonce", (signed.address, expected + 1))
        if error is None:
            events.append(runtime.event("System", "ExtrinsicSuccess"))
        else:
            pallet, index = _ERROR_INDEX.get((call["module"], error),
                                             _ERROR_INDEX.get(("SubtensorModule", error), (0, 0)))
            module_error = {"index": pallet, "error": f"0x{index:02x}000000"}
            events.append(runtime.event("System", "ExtrinsicFailed", dispatch_error={"Module": module_error}))
        records = [{"phase": {"ApplyExtrinsic": idx}, "extrinsic_idx": idx, "event": e, "topics": []}
                   for e in events]
        conn.execute("INSERT INTO extrinsics (hash, block, idx, signer, call, success, error, events) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (signed.hash, head, idx, signed.address, signed.call.decode(), int(error is None),
                      error, dumps(records)))
        return self._result(conn.execute("SELECT * FROM extrinsics WHERE hash = ?",
                                         (signed.hash,)).fetchone())

    def _result(self, row) -> bt.ExtrinsicResult:
        common = {"block_hash": self.store.block_hash(row["block"]),
                  "extrinsic_id": f"{row['block']}-{row['idx']:04d}"}
        if row["success"]:
            return bt.ExtrinsicResult(success=True, message="Success", fee=bt.Balance.from_rao(0),
                                      events=json.loads(row["events"]), **common)
        docs = _ERROR_DOCS.get(row["error"], row["error"])
        return bt.ExtrinsicResult(success=False, message=docs, error=bt.ChainError(docs, row["error"]),
                                  **common)

    @staticmethod
    def _rejection(name: str) -> bt.ExtrinsicResult:
        message = _POOL_REJECTIONS[name]
        return bt.ExtrinsicResult(success=False, message=message, error=bt.ChainError(message, name))
