"""The dev chain's single SQLite file: schema, validation, transactions and the block clock.

Several local OS processes (miners, validators, the CLI) share one chain by opening the same
file. SQLite in WAL mode gives them that safely: every state change runs inside
``BEGIN IMMEDIATE`` (one writer at a time, readers never blocked), and every read-modify-write
happens inside that one transaction, so concurrent registrations or weight updates never lose
each other. A fresh connection is opened per transaction, which keeps the store usable from any
thread (the SDK runs its event loop on its own thread) without connection sharing.

There is no block producer: the head is a pure function of wall time,
``floor((now - genesis) / block_time)``, identical in every process.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hivetrain.chain.errors import ChainError

MAGIC = "hivetrain-devchain"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subnets (
    netuid INTEGER PRIMARY KEY,
    tempo INTEGER NOT NULL,
    weights_rate_limit INTEGER NOT NULL,
    max_uids INTEGER NOT NULL,
    immunity_period INTEGER NOT NULL,
    min_allowed_weights INTEGER NOT NULL,
    max_weight_limit INTEGER NOT NULL,
    weights_version INTEGER NOT NULL,
    serving_rate_limit INTEGER NOT NULL,
    commit_reveal INTEGER NOT NULL,
    owner_coldkey TEXT NOT NULL,
    owner_hotkey TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    last_epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS neurons (
    netuid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    coldkey TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    last_update INTEGER NOT NULL,
    validator_permit INTEGER NOT NULL,
    incentive INTEGER NOT NULL,
    dividends INTEGER NOT NULL,
    PRIMARY KEY (netuid, uid),
    UNIQUE (netuid, hotkey)
);
CREATE TABLE IF NOT EXISTS owners (hotkey TEXT PRIMARY KEY, coldkey TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stake (
    netuid INTEGER NOT NULL, hotkey TEXT NOT NULL, rao INTEGER NOT NULL,
    PRIMARY KEY (netuid, hotkey)
);
CREATE TABLE IF NOT EXISTS axons (
    netuid INTEGER NOT NULL, hotkey TEXT NOT NULL, block INTEGER NOT NULL,
    version INTEGER NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL,
    ip_type INTEGER NOT NULL, protocol INTEGER NOT NULL,
    PRIMARY KEY (netuid, hotkey)
);
CREATE TABLE IF NOT EXISTS commitments (
    netuid INTEGER NOT NULL, hotkey TEXT NOT NULL, block INTEGER NOT NULL, fields TEXT NOT NULL,
    PRIMARY KEY (netuid, hotkey)
);
CREATE TABLE IF NOT EXISTS weights (
    netuid INTEGER NOT NULL, uid INTEGER NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (netuid, uid)
);
CREATE TABLE IF NOT EXISTS nonces (address TEXT PRIMARY KEY, nonce INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS extrinsics (
    hash TEXT PRIMARY KEY,
    block INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    signer TEXT NOT NULL,
    call TEXT NOT NULL,
    success INTEGER NOT NULL,
    error TEXT,
    events TEXT NOT NULL,
    UNIQUE (block, idx)
);
"""


def _init_hint(path: Path) -> str:
    return f"create a fresh dev chain with `hivetrain chain init --chain.path {path} --wallet.name owner`"


class Store:
    """One dev-chain file: opened (and checked) once, then used through short transactions."""

    def __init__(self, path: Path, chain_id: str, genesis: float, block_time: float):
        self.path = path
        self.chain_id = chain_id
        self.genesis = genesis
        self.block_time = block_time

    # Opening ----------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, block_time: float) -> "Store":
        """Create the file (or reuse a valid existing chain, whose own block time then wins).

        Safe when several processes race to create the same file: the emptiness check and the
        schema creation happen in one ``BEGIN IMMEDIATE`` transaction, so exactly one genesis is
        written. A file that already holds tables is never modified here: :meth:`open` then
        accepts it or explains why not.
        """
        if block_time <= 0:
            raise ChainError(f"--chain.block_time must be positive, got {block_time}")
        path = Path(path).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = None
        try:
            conn = _connect(path)
            conn.execute("BEGIN IMMEDIATE")
            fresh = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            if fresh:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                # Genesis one block in the past: the chain starts at block 1, so a stored
                # ``last_update`` of 0 unambiguously means "never".
                rows = {
                    "magic": MAGIC,
                    "schema_version": str(SCHEMA_VERSION),
                    "chain_id": uuid.uuid4().hex,
                    "genesis": repr(time.time() - block_time),
                    "block_time": repr(float(block_time)),
                }
                conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", rows.items())
            conn.execute("COMMIT")
            if fresh:
                conn.execute("PRAGMA journal_mode=WAL")  # persistent; readers never block the writer
        except sqlite3.DatabaseError:
            pass  # not an SQLite file: open() below reports it with the fix
        finally:
            if conn is not None:
                conn.close()
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Store":
        """Open an existing chain, refusing anything that is not a dev chain of this schema."""
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise ChainError(f"no dev chain at {path}; {_init_hint(path)}")
        conn = None
        try:
            conn = _connect(path)
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        except sqlite3.DatabaseError as error:
            raise ChainError(
                f"{path} is not a hivetrain dev chain (SQLite says: {error}); point --chain.path at "
                f"the right file or {_init_hint(path.with_name('chain.sqlite'))}"
            ) from error
        finally:
            if conn is not None:
                conn.close()
        if meta.get("magic") != MAGIC:
            raise ChainError(
                f"{path} is an SQLite file but not a hivetrain dev chain (no '{MAGIC}' magic); "
                f"point --chain.path at the chain file, or {_init_hint(path.with_name('chain.sqlite'))}"
            )
        version = int(meta.get("schema_version", "0"))
        if version != SCHEMA_VERSION:
            raise ChainError(
                f"{path} holds dev chain schema v{version}, but this hivetrain reads v{SCHEMA_VERSION}; "
                f"{_init_hint(path.with_name('chain-v' + str(SCHEMA_VERSION) + '.sqlite'))}"
            )
        return cls(path, meta["chain_id"], float(meta["genesis"]), float(meta["block_time"]))

    # Transactions -----------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: the whole body is one atomic state transition."""
        conn = _connect(self.path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several SELECTs see one consistent state."""
        conn = _connect(self.path)
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        finally:
            conn.close()

    # Block clock ------------------------------------------------------------------------------

    def head(self) -> int:
        return int((time.time() - self.genesis) // self.block_time)

    def block_timestamp_ms(self, block: int) -> int:
        return int((self.genesis + block * self.block_time) * 1000)

    def block_hash(self, block: int) -> str:
        """``0x`` + 8-byte height + 24-byte digest of (chain id, height): deterministic per height
        and chain, and invertible without a lookup table."""
        digest = hashlib.blake2b(f"{self.chain_id}:{block}".encode(), digest_size=24).hexdigest()
        return f"0x{block:016x}{digest}"

    def block_of_hash(self, block_hash: str) -> int:
        """The height a hash names; raises for hashes of another chain or of future blocks."""
        text = block_hash.removeprefix("0x")
        try:
            block = int(text[:16], 16)
        except ValueError:
            block = -1
        if block < 0 or self.block_hash(block) != "0x" + text or block > self.head():
            raise LookupError(f"unknown block hash {block_hash}")
        return block


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def dumps(value) -> str:
    """Canonical JSON for stored rows (sorted keys, so equal values compare equal as text)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
