"""Storage items and the metagraph runtime API of the dev chain, in the SDK's decoded shapes.

The SDK reads chain state as ``(pallet, item, params)`` and expects the plain decoded values a
subtensor node returns (ints, ss58 strings, lists, dicts). This module answers those reads from
the SQLite tables, for the items hivetrain and the SDK code paths it uses actually touch
(registration, serving, weights preflight, commitments, metagraph). Items not listed here read
as absent (``None`` / empty map), exactly as unset storage does on a real node.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable

TOKEN_SYMBOL = "α"
SUBNET_NAME = "hivetrain"

Item = tuple[str, str]
_SINGLE: dict[Item, Callable[..., Any]] = {}
_MAPS: dict[Item, Callable[..., list[tuple[Any, Any]]]] = {}


def single(module: str, item: str):
    def register(fn):
        _SINGLE[(module, item)] = fn
        return fn
    return register


def mapping(module: str, item: str):
    def register(fn):
        _MAPS[(module, item)] = fn
        return fn
    return register


def query(conn: sqlite3.Connection, block: int, module: str, item: str, params: list) -> Any:
    reader = _SINGLE.get((module, item))
    return None if reader is None else reader(conn, block, *params)


def query_map(conn: sqlite3.Connection, block: int, module: str, item: str, params: list) -> list:
    reader = _MAPS.get((module, item))
    return [] if reader is None else reader(conn, block, *params)


def _one(conn: sqlite3.Connection, sql: str, *args) -> sqlite3.Row | None:
    return conn.execute(sql, args).fetchone()


def _rows(conn: sqlite3.Connection, sql: str, *args) -> list[sqlite3.Row]:
    return conn.execute(sql, args).fetchall()


def _subnet(conn, netuid) -> sqlite3.Row | None:
    return _one(conn, "SELECT * FROM subnets WHERE netuid = ?", int(netuid))


def _column(conn, netuid, name: str) -> list | None:
    """A per-uid vector (``LastUpdate``, ``Incentive`` ...) ordered by uid, None without subnet."""
    if _subnet(conn, netuid) is None:
        return None
    return [row[0] for row in _rows(conn, f"SELECT {name} FROM neurons WHERE netuid = ? ORDER BY uid",
                                    int(netuid))]


# Per-subnet hyperparameters and state ---------------------------------------------------------

_HYPERPARAMETERS = {
    "Tempo": "tempo",
    "WeightsSetRateLimit": "weights_rate_limit",
    "MaxAllowedUids": "max_uids",
    "ImmunityPeriod": "immunity_period",
    "MinAllowedWeights": "min_allowed_weights",
    "MaxWeightsLimit": "max_weight_limit",
    "WeightsVersionKey": "weights_version",
    "ServingRateLimit": "serving_rate_limit",
    "SubnetOwner": "owner_coldkey",
    "SubnetOwnerHotkey": "owner_hotkey",
    "NetworkRegisteredAt": "registered_at",
    "LastEpochBlock": "last_epoch",
}


def _hyperparameter(column: str):
    def read(conn, block, netuid):
        row = _subnet(conn, netuid)
        return None if row is None else row[column]

    def read_all(conn, block):
        return [(row["netuid"], row[column]) for row in conn.execute("SELECT * FROM subnets")]
    return read, read_all


for _item, _col in _HYPERPARAMETERS.items():
    _SINGLE[("SubtensorModule", _item)], _MAPS[("SubtensorModule", _item)] = _hyperparameter(_col)


@single("SubtensorModule", "NetworksAdded")
def _networks_added(conn, block, netuid):
    return True if _subnet(conn, netuid) is not None else None


@mapping("SubtensorModule", "NetworksAdded")
def _networks_added_map(conn, block):
    return [(row[0], True) for row in conn.execute("SELECT netuid FROM subnets")]


@single("SubtensorModule", "CommitRevealWeightsEnabled")
def _commit_reveal(conn, block, netuid):
    row = _subnet(conn, netuid)
    return None if row is None else bool(row["commit_reveal"])


@single("SubtensorModule", "SubnetEpochConsensus")
def _consensus_mode(conn, block, netuid):
    return "Yuma" if _subnet(conn, netuid) is not None else None


@single("SubtensorModule", "Burn")
def _burn(conn, block, netuid):
    return 0 if _subnet(conn, netuid) is not None else None


@single("SubtensorModule", "CollateralLockShare")
def _lock_share(conn, block, netuid):
    return 0 if _subnet(conn, netuid) is not None else None


@single("SubtensorModule", "SubnetworkN")
def _subnetwork_n(conn, block, netuid):
    column = _column(conn, netuid, "uid")
    return None if column is None else len(column)


@single("SubtensorModule", "BlocksSinceLastStep")
def _blocks_since_last_step(conn, block, netuid):
    row = _subnet(conn, netuid)
    return None if row is None else max(0, block - row["last_epoch"])


@single("SubtensorModule", "TokenSymbol")
def _token_symbol(conn, block, netuid):
    return TOKEN_SYMBOL.encode() if _subnet(conn, netuid) is not None else None


@mapping("SubtensorModule", "TokenSymbol")
def _token_symbols(conn, block):
    return [(row[0], TOKEN_SYMBOL.encode()) for row in conn.execute("SELECT netuid FROM subnets")]


def _vector(column: str, as_bool: bool = False):
    def read(conn, block, netuid):
        values = _column(conn, netuid, column)
        if values is None:
            return None
        return [bool(v) for v in values] if as_bool else values
    return read


_SINGLE[("SubtensorModule", "LastUpdate")] = _vector("last_update")
_SINGLE[("SubtensorModule", "ValidatorPermit")] = _vector("validator_permit", as_bool=True)
_SINGLE[("SubtensorModule", "Incentive")] = _vector("incentive")
_SINGLE[("SubtensorModule", "Dividends")] = _vector("dividends")


# Neurons, keys, endpoints --------------------------------------------------------------------


def _value(row: sqlite3.Row | None, default=None):
    return default if row is None else row[0]


def _neuron_field(conn, column: str, netuid, key_column: str, key):
    sql = f"SELECT {column} FROM neurons WHERE netuid = ? AND {key_column} = ?"
    return _value(_one(conn, sql, int(netuid), key))


def _neuron_pairs(conn, key_column: str, value_column: str, netuid) -> list[tuple]:
    sql = f"SELECT {key_column}, {value_column} FROM neurons WHERE netuid = ? ORDER BY uid"
    return [tuple(row) for row in _rows(conn, sql, int(netuid))]


@single("SubtensorModule", "Uids")
def _uid(conn, block, netuid, hotkey):
    return _neuron_field(conn, "uid", netuid, "hotkey", str(hotkey))


@mapping("SubtensorModule", "Uids")
def _uids(conn, block, netuid):
    return _neuron_pairs(conn, "hotkey", "uid", netuid)


@single("SubtensorModule", "Keys")
def _key(conn, block, netuid, uid):
    return _neuron_field(conn, "hotkey", netuid, "uid", int(uid))


@mapping("SubtensorModule", "Keys")
def _keys(conn, block, netuid):
    return _neuron_pairs(conn, "uid", "hotkey", netuid)


@single("SubtensorModule", "BlockAtRegistration")
def _registered_at(conn, block, netuid, uid):
    return _neuron_field(conn, "registered_at", netuid, "uid", int(uid))


@single("SubtensorModule", "Owner")
def _owner(conn, block, hotkey):
    return _value(_one(conn, "SELECT coldkey FROM owners WHERE hotkey = ?", str(hotkey)))


@single("SubtensorModule", "TotalHotkeyAlpha")
def _hotkey_alpha(conn, block, hotkey, netuid):
    row = _one(conn, "SELECT rao FROM stake WHERE netuid = ? AND hotkey = ?", int(netuid), str(hotkey))
    return _value(row, 0)


def _axon_info(row: sqlite3.Row | None) -> dict:
    if row is None:
        return {"block": 0, "version": 0, "ip": 0, "port": 0, "ip_type": 0, "protocol": 0,
                "placeholder1": 0, "placeholder2": 0}
    return {"block": row["block"], "version": row["version"], "ip": int(row["ip"]), "port": row["port"],
            "ip_type": row["ip_type"], "protocol": row["protocol"], "placeholder1": 0, "placeholder2": 0}


@single("SubtensorModule", "Axons")
def _axon(conn, block, netuid, hotkey):
    row = _one(conn, "SELECT * FROM axons WHERE netuid = ? AND hotkey = ?", int(netuid), str(hotkey))
    return None if row is None else _axon_info(row)


@mapping("SubtensorModule", "Axons")
def _axons(conn, block, netuid):
    rows = _rows(conn, "SELECT * FROM axons WHERE netuid = ?", int(netuid))
    return [(r["hotkey"], _axon_info(r)) for r in rows]


def _weight_row(text: str) -> list[tuple[int, int]]:
    return [tuple(pair) for pair in json.loads(text)]


@single("SubtensorModule", "Weights")
def _weights_row(conn, block, netuid, uid):
    row = _one(conn, "SELECT row FROM weights WHERE netuid = ? AND uid = ?", int(netuid), int(uid))
    return [] if row is None else _weight_row(row[0])


@mapping("SubtensorModule", "Weights")
def _weights(conn, block, netuid):
    rows = _rows(conn, "SELECT uid, row FROM weights WHERE netuid = ? ORDER BY uid", int(netuid))
    return [(r[0], _weight_row(r[1])) for r in rows]


# Commitments, accounts, time ----------------------------------------------------------------


def _registration(row: sqlite3.Row) -> dict:
    return {"deposit": 0, "block": row["block"], "info": {"fields": json.loads(row["fields"])}}


@single("Commitments", "CommitmentOf")
def _commitment(conn, block, netuid, hotkey):
    row = _one(conn, "SELECT * FROM commitments WHERE netuid = ? AND hotkey = ?", int(netuid), str(hotkey))
    return None if row is None else _registration(row)


@mapping("Commitments", "CommitmentOf")
def _commitments(conn, block, netuid):
    rows = _rows(conn, "SELECT * FROM commitments WHERE netuid = ?", int(netuid))
    return [(r["hotkey"], _registration(r)) for r in rows]


@single("System", "Account")
def _account(conn, block, address):
    nonce = _value(_one(conn, "SELECT nonce FROM nonces WHERE address = ?", str(address)), 0)
    return {"nonce": nonce, "consumers": 0, "providers": 1, "sufficients": 0,
            "data": {"free": 0, "reserved": 0, "frozen": 0, "flags": 0}}


@single("System", "Number")
def _number(conn, block):
    return block


# The metagraph runtime API ----------------------------------------------------------------------


def metagraph(conn: sqlite3.Connection, block: int, netuid: int) -> dict | None:
    """``SubnetInfoRuntimeApi.get_metagraph``: the subset of its record the SDK lifts into
    ``bittensor.Metagraph``. Scores are u16 fractions; rank, trust, consensus, emission and the
    TAO pool are always zero on the dev chain (see ``devchain_runtime.run_epoch``)."""
    subnet = _subnet(conn, netuid)
    if subnet is None:
        return None
    neurons = _rows(conn, "SELECT * FROM neurons WHERE netuid = ? ORDER BY uid", int(netuid))
    stakes = dict(_rows(conn, "SELECT hotkey, rao FROM stake WHERE netuid = ?", int(netuid)))
    axons = {r["hotkey"]: r for r in _rows(conn, "SELECT * FROM axons WHERE netuid = ?", int(netuid))}
    n = len(neurons)
    stake = [stakes.get(r["hotkey"], 0) for r in neurons]
    last_epoch = subnet["last_epoch"]
    return {
        "netuid": int(netuid),
        "name": list(SUBNET_NAME.encode()),
        "symbol": list(TOKEN_SYMBOL.encode()),
        "identity": None,
        "network_registered_at": subnet["registered_at"],
        "owner_hotkey": subnet["owner_hotkey"],
        "owner_coldkey": subnet["owner_coldkey"],
        "block": block,
        "tempo": subnet["tempo"],
        "last_step": last_epoch,
        "blocks_since_last_step": max(0, block - last_epoch),
        "num_uids": n,
        "max_uids": subnet["max_uids"],
        "tao_in": 0,
        "alpha_in": 0,
        "moving_price": None,
        "weights_rate_limit": subnet["weights_rate_limit"],
        "weights_version": subnet["weights_version"],
        "immunity_period": subnet["immunity_period"],
        "min_allowed_weights": subnet["min_allowed_weights"],
        "max_weights_limit": subnet["max_weight_limit"],
        "commit_reveal_weights_enabled": bool(subnet["commit_reveal"]),
        "hotkeys": [r["hotkey"] for r in neurons],
        "coldkeys": [r["coldkey"] for r in neurons],
        "identities": [None] * n,
        "axons": [_axon_info(axons.get(r["hotkey"])) for r in neurons],
        "active": [True] * n,
        "validator_permit": [bool(r["validator_permit"]) for r in neurons],
        "last_update": [r["last_update"] for r in neurons],
        "block_at_registration": [r["registered_at"] for r in neurons],
        "rank": [0] * n,
        "trust": [0] * n,
        "consensus": [0] * n,
        "incentives": [r["incentive"] for r in neurons],
        "dividends": [r["dividends"] for r in neurons],
        "pruning_score": [0] * n,
        "emission": [0] * n,
        "alpha_stake": stake,
        "tao_stake": [0] * n,
        "total_stake": stake,
    }
