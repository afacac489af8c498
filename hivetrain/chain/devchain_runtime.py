"""The dev chain's state transitions: the few subtensor pallet calls hivetrain uses, plus epochs.

Every function takes an open write transaction (``sqlite3.Connection``) and the current block,
and either changes state and returns the events it emitted, or raises :class:`DispatchError`
carrying the name subtensor itself would report (``HotKeyNotRegisteredInSubNet``,
``SettingWeightsTooFast``, ...), so the SDK maps dev-chain failures to the same error codes and
remediation text as real ones. Checks follow subtensor's order where it matters to the caller.

The epoch is a simplified Yuma consensus, documented on :func:`run_epoch`.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any, Callable

from hivetrain.chain.devchain_store import dumps

U16_MAX = 65535
MAX_COMMITMENT_FIELDS = 3  # subtensor's Commitments::MaxFields
MAX_RAW_BYTES = 128  # Data::Raw0 .. Data::Raw128


class DispatchError(Exception):
    """A call rejected by the runtime; ``name`` is the subtensor error name."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass
class SubnetParams:
    """The hyperparameters the dev chain models. Defaults suit a fast local swarm, not finney
    (where tempo is 360 and the weights rate limit 100 blocks)."""

    tempo: int = 10
    weights_rate_limit: int = 5
    max_uids: int = 64
    immunity_period: int = 0
    min_allowed_weights: int = 0
    max_weight_limit: int = U16_MAX
    weights_version: int = 0
    serving_rate_limit: int = 0

    def check(self) -> None:
        if self.tempo < 1:
            raise ValueError("tempo must be at least 1 block")
        if not 1 <= self.max_uids <= U16_MAX:
            raise ValueError("max_uids must be in 1..65535")
        for name in ("weights_rate_limit", "immunity_period", "min_allowed_weights",
                     "weights_version", "serving_rate_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be zero or positive")
        if not 0 < self.max_weight_limit <= U16_MAX:
            raise ValueError("max_weight_limit must be in 1..65535")


def event(module: str, name: str, **attributes: Any) -> dict:
    return {"module_id": module, "event_id": name, "attributes": attributes}


# Subnets and registration -------------------------------------------------------------------


def subnet_row(conn: sqlite3.Connection, netuid: int, missing: str = "SubnetNotExists") -> sqlite3.Row:
    row = conn.execute("SELECT * FROM subnets WHERE netuid = ?", (int(netuid),)).fetchone()
    if row is None:
        raise DispatchError(missing)
    return row


def subnet_exists(conn, netuid: int) -> bool:
    return conn.execute("SELECT 1 FROM subnets WHERE netuid = ?", (int(netuid),)).fetchone() is not None


def create_subnet(conn, netuid: int, params: SubnetParams, owner_coldkey: str,
                  owner_hotkey: str, block: int) -> bool:
    """Create the subnet with commit-reveal off; False (and no change) when it already exists."""
    if subnet_exists(conn, netuid):
        return False
    values = asdict(params)
    conn.execute(
        "INSERT INTO subnets (netuid, tempo, weights_rate_limit, max_uids, immunity_period, "
        "min_allowed_weights, max_weight_limit, weights_version, serving_rate_limit, commit_reveal, "
        "owner_coldkey, owner_hotkey, registered_at, last_epoch) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
        (netuid, values["tempo"], values["weights_rate_limit"], values["max_uids"],
         values["immunity_period"], values["min_allowed_weights"], values["max_weight_limit"],
         values["weights_version"], values["serving_rate_limit"], owner_coldkey, owner_hotkey,
         block, block),
    )
    return True


def register(conn, netuid: int, hotkey: str, coldkey: str, block: int) -> tuple[int, list[dict]]:
    """Give ``hotkey`` a uid, pruning one like subtensor does when the subnet is full.

    The pruned neuron is the non-immune one with the lowest emission share, taken here as
    ``incentive + dividends`` (subtensor prunes by emission, which pays miners for incentive and
    validators for dividends), ties broken by older registration, then lower uid. Stake, axon
    and commitment stay with the old hotkey (they are hotkey-keyed on chain); its uid row and
    weight row are replaced.
    """
    subnet = subnet_row(conn, netuid)
    if conn.execute("SELECT 1 FROM neurons WHERE netuid = ? AND hotkey = ?", (netuid, hotkey)).fetchone():
        raise DispatchError("HotKeyAlreadyRegisteredInSubNet")
    owner = conn.execute("SELECT coldkey FROM owners WHERE hotkey = ?", (hotkey,)).fetchone()
    if owner is not None and owner[0] != coldkey:
        raise DispatchError("NonAssociatedColdKey")
    count = conn.execute("SELECT COUNT(*) FROM neurons WHERE netuid = ?", (netuid,)).fetchone()[0]
    events = []
    if count < subnet["max_uids"]:
        uid = count
    else:
        victim = conn.execute(
            "SELECT uid, hotkey FROM neurons WHERE netuid = ? AND ? - registered_at >= ? "
            "ORDER BY incentive + dividends ASC, registered_at ASC, uid ASC LIMIT 1",
            (netuid, block, subnet["immunity_period"]),
        ).fetchone()
        if victim is None:
            raise DispatchError("NoNeuronIdAvailable")
        uid = victim[0]
        conn.execute("DELETE FROM neurons WHERE netuid = ? AND uid = ?", (netuid, uid))
        conn.execute("DELETE FROM weights WHERE netuid = ? AND uid = ?", (netuid, uid))
        events.append(event("SubtensorModule", "NeuronDeregistered", netuid=netuid, uid=uid,
                            hotkey=victim[1]))
    conn.execute(
        "INSERT INTO neurons (netuid, uid, hotkey, coldkey, registered_at, last_update, "
        "validator_permit, incentive, dividends) VALUES (?, ?, ?, ?, ?, 0, 0, 0, 0)",
        (netuid, uid, hotkey, coldkey, block),
    )
    conn.execute("INSERT OR IGNORE INTO owners (hotkey, coldkey) VALUES (?, ?)", (hotkey, coldkey))
    events.append(event("SubtensorModule", "NeuronRegistered", netuid=netuid, uid=uid, hotkey=hotkey))
    return uid, events


def uid_of(conn, netuid: int, hotkey: str) -> int | None:
    row = conn.execute("SELECT uid FROM neurons WHERE netuid = ? AND hotkey = ?", (netuid, hotkey)).fetchone()
    return None if row is None else row[0]


def burned_register(conn, origin: str, params: dict, block: int) -> list[dict]:
    """``SubtensorModule.burned_register``: signed by the coldkey. The dev chain charges no burn."""
    _, events = register(conn, int(params["netuid"]), str(params["hotkey"]), origin, block)
    return events


# Serving and commitments --------------------------------------------------------------------


def serve_axon(conn, origin: str, params: dict, block: int) -> list[dict]:
    netuid = int(params["netuid"])
    subnet = subnet_row(conn, netuid, missing="MechanismDoesNotExist")
    if uid_of(conn, netuid, origin) is None:
        raise DispatchError("HotKeyNotRegisteredInNetwork")
    ip_type, ip = int(params["ip_type"]), int(params["ip"])
    if ip_type not in (4, 6):
        raise DispatchError("InvalidIpType")
    try:
        ipaddress.IPv4Address(ip) if ip_type == 4 else ipaddress.IPv6Address(ip)
    except ValueError:
        raise DispatchError("InvalidIpAddress") from None
    if ip == 0:
        raise DispatchError("InvalidIpAddress")
    previous = conn.execute("SELECT block FROM axons WHERE netuid = ? AND hotkey = ?",
                            (netuid, origin)).fetchone()
    if previous is not None and block - previous[0] < subnet["serving_rate_limit"]:
        raise DispatchError("ServingRateLimitExceeded")
    conn.execute(
        "INSERT OR REPLACE INTO axons (netuid, hotkey, block, version, ip, port, ip_type, protocol) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (netuid, origin, block, int(params["version"]), str(ip), int(params["port"]), ip_type,
         int(params["protocol"])),
    )
    return [event("SubtensorModule", "AxonServed", netuid=netuid, hotkey=origin)]


def normalize_commitment_fields(info: Any) -> list[dict]:
    """``info={"fields": [{"RawN": bytes | hex | list}, ...]}`` -> ``[{"RawN": "0x.."}]``.

    Only plaintext ``Raw0..Raw128`` data is modelled (no timelock or hash variants); the byte
    length must match the variant, as SCALE encoding would demand. Raises ``ValueError``.
    """
    fields = info.get("fields") if isinstance(info, dict) else None
    if not isinstance(fields, list):
        raise ValueError("commitment info must be {'fields': [{'RawN': data}, ...]}")
    out = []
    for entry in fields:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(f"commitment field {entry!r} must be a one-key dict like {{'Raw5': b'hello'}}")
        (variant, value), = entry.items()
        if not (variant.startswith("Raw") and variant[3:].isdigit()):
            raise ValueError(f"commitment field variant {variant!r} is not modelled by the dev chain "
                             "(use RawN)")
        data = _as_bytes(value)
        if len(data) != int(variant[3:]) or len(data) > MAX_RAW_BYTES:
            raise ValueError(f"{variant} needs exactly {variant[3:]} bytes (at most {MAX_RAW_BYTES}), "
                             f"got {len(data)}")
        out.append({variant: "0x" + data.hex()})
    return out


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x")) if value.startswith("0x") else value.encode()
    if isinstance(value, (list, tuple)):
        return bytes(int(b) for b in value)
    return bytes(value)


def set_commitment(conn, origin: str, params: dict, block: int) -> list[dict]:
    """``Commitments.set_commitment``: signed by a hotkey registered on the subnet."""
    netuid = int(params["netuid"])
    if not subnet_exists(conn, netuid) or uid_of(conn, netuid, origin) is None:
        raise DispatchError("AccountNotAllowedCommit")
    fields = params["info"]["fields"]  # normalized when the call was composed
    if len(fields) > MAX_COMMITMENT_FIELDS:
        raise DispatchError("TooManyFieldsInCommitmentInfo")
    conn.execute(
        "INSERT OR REPLACE INTO commitments (netuid, hotkey, block, fields) VALUES (?, ?, ?, ?)",
        (netuid, origin, block, dumps(fields)),
    )
    return [event("Commitments", "Commitment", netuid=netuid, who=origin)]


# Weights ------------------------------------------------------------------------------------


def set_weights(conn, origin: str, params: dict, block: int) -> list[dict]:
    """``set_mechanism_weights`` / ``set_weights``: signed by the validator's hotkey.

    Stores the row max-upscaled to u16 like the pallet, and stamps ``last_update``.
    """
    netuid, mecid = int(params["netuid"]), int(params.get("mecid", 0))
    subnet = subnet_row(conn, netuid, missing="MechanismDoesNotExist")
    if mecid != 0:
        raise DispatchError("MechanismDoesNotExist")
    if subnet["commit_reveal"]:
        raise DispatchError("CommitRevealEnabled")
    dests = [int(u) for u in params["dests"]]
    values = [int(v) for v in params["weights"]]
    if len(dests) != len(values):
        raise DispatchError("WeightVecNotEqualSize")
    me = conn.execute("SELECT * FROM neurons WHERE netuid = ? AND hotkey = ?", (netuid, origin)).fetchone()
    if me is None:
        raise DispatchError("HotKeyNotRegisteredInSubNet")
    if int(params.get("version_key", 0)) < subnet["weights_version"]:
        raise DispatchError("IncorrectWeightVersionKey")
    if me["last_update"] > 0 and block - me["last_update"] < subnet["weights_rate_limit"]:
        raise DispatchError("SettingWeightsTooFast")
    count = conn.execute("SELECT COUNT(*) FROM neurons WHERE netuid = ?", (netuid,)).fetchone()[0]
    if any(not 0 <= uid < count for uid in dests):
        raise DispatchError("UidVecContainInvalidOne")
    if len(set(dests)) != len(dests):
        raise DispatchError("DuplicateUids")
    self_weight = dests == [me["uid"]]
    if not self_weight and not me["validator_permit"]:
        raise DispatchError("NeuronNoValidatorPermit")
    if not self_weight and len(dests) < subnet["min_allowed_weights"]:
        raise DispatchError("WeightVecLengthIsLow")
    if any(v < 0 or v > U16_MAX for v in values):
        raise DispatchError("MaxWeightExceeded")
    total = sum(values)
    if not self_weight and total and max(values) * U16_MAX > subnet["max_weight_limit"] * total:
        raise DispatchError("MaxWeightExceeded")
    top = max(values, default=0)
    row = sorted((uid, value * U16_MAX // top) for uid, value in zip(dests, values) if value) if top else []
    conn.execute("INSERT OR REPLACE INTO weights (netuid, uid, row) VALUES (?, ?, ?)",
                 (netuid, me["uid"], dumps(row)))
    conn.execute("UPDATE neurons SET last_update = ? WHERE netuid = ? AND uid = ?",
                 (block, netuid, me["uid"]))
    return [event("SubtensorModule", "WeightsSet", netuid=netuid, uid=me["uid"])]


def submit_encrypted(conn, origin: str, params: dict, block: int) -> list[dict]:
    """``MevShield.submit_encrypted``: the carrier itself changes nothing. Its inner extrinsic is
    executed by the dev chain's submit path (see ``DevChain``), standing in for the block author
    who would decrypt it."""
    return [event("MevShield", "EncryptedSubmitted", who=origin)]


CALLS: dict[tuple[str, str], Callable[[sqlite3.Connection, str, dict, int], list[dict]]] = {
    ("SubtensorModule", "burned_register"): burned_register,
    ("SubtensorModule", "serve_axon"): serve_axon,
    ("SubtensorModule", "set_mechanism_weights"): set_weights,
    ("SubtensorModule", "set_weights"): set_weights,
    ("Commitments", "set_commitment"): set_commitment,
    ("MevShield", "submit_encrypted"): submit_encrypted,
}


# Epochs -------------------------------------------------------------------------------------


def last_epoch_at_or_before(block: int, netuid: int, tempo: int) -> int:
    """Subtensor runs a subnet's epoch at blocks where ``(b + netuid + 1) % (tempo + 1) == tempo``."""
    return block - ((block + netuid + 1) % (tempo + 1) + 1) % (tempo + 1)


def run_due_epochs(conn, head: int) -> None:
    """Run, for every subnet, the latest epoch that is due and has not run yet.

    Epochs are computed lazily, at the first chain access past their block. Running only the
    latest due one is exact: any state change first runs this, so state is constant between the
    skipped epoch blocks, and the simplified consensus keeps no memory (no bonds EMA).
    """
    subnets = conn.execute("SELECT netuid, tempo, last_epoch FROM subnets").fetchall()
    for netuid, tempo, last_epoch in subnets:
        due = last_epoch_at_or_before(head, netuid, tempo)
        if due > last_epoch:
            run_epoch(conn, netuid, due)


def epochs_due(conn, head: int) -> bool:
    subnets = conn.execute("SELECT netuid, tempo, last_epoch FROM subnets").fetchall()
    return any(last_epoch_at_or_before(head, n, t) > last for n, t, last in subnets)


def run_epoch(conn, netuid: int, block: int) -> None:
    """Simplified Yuma: incentive is the stake-weighted average of validators' weight rows.

    A validator counts when it holds a permit, has stake, and has a non-empty row. Each row is
    normalised to sum 1 after masking weights on uids registered at or after the validator's
    last update (as subtensor masks outdated weights). ``incentive[j] = sum_i stake_i * w_ij /
    sum_i stake_i``; ``dividends[i]`` is validator i's share of that stake. Not modelled: weight
    clipping against the stake-weighted median (consensus), bonds and their EMA, trust, rank,
    emission amounts, activity cutoff and permit elections.
    """
    neurons = {r["uid"]: r for r in conn.execute("SELECT * FROM neurons WHERE netuid = ?", (netuid,))}
    stakes = dict(conn.execute("SELECT hotkey, rao FROM stake WHERE netuid = ?", (netuid,)).fetchall())
    rows = {r["uid"]: json.loads(r["row"])
            for r in conn.execute("SELECT uid, row FROM weights WHERE netuid = ?", (netuid,))}
    weight_of: dict[int, float] = {}
    normalized: dict[int, dict[int, float]] = {}
    for uid, row in rows.items():
        validator = neurons.get(uid)
        stake = stakes.get(validator["hotkey"], 0) if validator is not None else 0
        if validator is None or not validator["validator_permit"] or stake <= 0:
            continue
        kept = {t: v for t, v in row
                if t in neurons and neurons[t]["registered_at"] < validator["last_update"]}
        total = sum(kept.values())
        if total > 0:
            normalized[uid] = {t: v / total for t, v in kept.items()}
            weight_of[uid] = float(stake)
    total_stake = sum(weight_of.values())
    incentive = {uid: 0.0 for uid in neurons}
    for uid, row in normalized.items():
        for target, w in row.items():
            incentive[target] += weight_of[uid] * w / total_stake
    for uid in neurons:
        dividend = weight_of.get(uid, 0.0) / total_stake if total_stake else 0.0
        conn.execute(
            "UPDATE neurons SET incentive = ?, dividends = ? WHERE netuid = ? AND uid = ?",
            (round(incentive[uid] * U16_MAX), round(dividend * U16_MAX), netuid, uid),
        )
    conn.execute("UPDATE subnets SET last_epoch = ? WHERE netuid = ?", (block, netuid))
