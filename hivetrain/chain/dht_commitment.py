"""How a neuron's DHT multiaddrs fit into a chain commitment, and how others read them back.

A commitment holds at most ``MaxFields`` (3 on subtensor) ``Raw`` fields of 128 bytes, so
384 bytes in all, and a hivemind peer usually announces several multiaddrs that all end in the
same ``/p2p/<peer id>``. The text form factors that suffix out::

    dht1 run=hivetrain-tiny-73674ebd47cae6a0 @12D3KooW... /ip4/10.0.0.5/tcp/4001

``dht1`` tags the format (anything else is ignored by readers), ``run=<run_id>`` names the run
the neuron trains, so that tools (``hivetrain status``, ``export``) find the swarm's run without
the operator repeating every training flag; ``@<id>`` sets the peer id appended to the following
addresses (a bare ``@`` clears it), and every ``/...`` token is one address. Readers skip tokens
they do not know. The run_id is bounded (``MAX_RUN_ID_BYTES``), so it always fits; addresses
that do not fit after it are dropped, in order, and reported to the caller.
"""

from __future__ import annotations

import re

TAG = "dht1"
RAW_FIELD_BYTES = 128
RUN_PREFIX = "run="
MAX_RUN_ID_BYTES = 64
_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,%d}" % MAX_RUN_ID_BYTES)


def _split_peer(addr: str) -> tuple[str, str | None]:
    cut = addr.rfind("/p2p/")
    if cut <= 0:
        return addr, None
    return addr[:cut], addr[cut + len("/p2p/"):]


def encode(addrs: list[str], capacity: int, run_id: str | None = None) -> tuple[str, list[str]]:
    """``(text, kept)``: the commitment text for ``run_id`` and as many of ``addrs`` as fit in
    ``capacity`` bytes, and the addresses it carries. Empty and duplicate addresses are skipped."""
    tokens, kept, current = [TAG], [], None
    if run_id is not None:
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"not a run_id (letters, digits, '._-', at most "
                             f"{MAX_RUN_ID_BYTES} bytes): {run_id!r}")
        tokens.append(RUN_PREFIX + run_id)
    for addr in dict.fromkeys(a.strip() for a in addrs if a and a.strip()):
        if not addr.startswith("/") or any(c.isspace() for c in addr):
            raise ValueError(f"not a multiaddr: {addr!r}")
        base, peer = _split_peer(addr)
        if peer != current:
            extra = [f"@{peer or ''}", base]
        else:
            extra = [base]
        if len(" ".join(tokens + extra).encode()) > capacity:
            break
        tokens += extra
        current = peer
        kept.append(addr)
    return " ".join(tokens), kept


def decode(text: str | None) -> list[str]:
    """The multiaddrs in a commitment text; ``[]`` for anything not in this format."""
    tokens = (text or "").split()
    if not tokens or tokens[0] != TAG:
        return []
    out, current = [], None
    for token in tokens[1:]:
        if token.startswith("@"):
            current = token[1:] or None
        elif token.startswith("/"):
            out.append(f"{token}/p2p/{current}" if current else token)
    return out


def decode_run_id(text: str | None) -> str | None:
    """The run_id a commitment text names; None for none, another format or a malformed one."""
    tokens = (text or "").split()
    if not tokens or tokens[0] != TAG:
        return None
    for token in tokens[1:]:
        if token.startswith(RUN_PREFIX) and _RUN_ID.fullmatch(token[len(RUN_PREFIX):]):
            return token[len(RUN_PREFIX):]
    return None


def to_fields(text: str) -> list[dict[str, bytes]]:
    """Split the text's bytes into ``Raw<n>`` commitment fields of at most 128 bytes each."""
    data = text.encode()
    chunks = [data[i:i + RAW_FIELD_BYTES] for i in range(0, len(data), RAW_FIELD_BYTES)]
    return [{f"Raw{len(chunk)}": chunk} for chunk in chunks]
