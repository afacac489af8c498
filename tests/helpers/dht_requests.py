"""Counting what a hivemind DHT node is asked for, per key: the DHT cost of a swarm's rounds.

Every lookup and store a peer makes reaches the DHT nodes nearest the key, and on a small swarm
that is every node. So a bystander node's counts are what the swarm's peers asked of the DHT.
The counters live in the node's own process (``DHT.run_coroutine``), around its local storage.
"""

from __future__ import annotations

from collections import Counter

import hivemind
from hivemind.dht.routing import DHTID


async def _install(dht, node) -> None:
    counts = Counter()
    storage = node.protocol.storage

    def counted(kind, method):
        def call(key, *args, **kwargs):
            counts[kind, key] += 1
            return method(key, *args, **kwargs)
        return call

    storage.get = counted("lookup", storage.get)
    storage.store = counted("store", storage.store)
    storage.store_subkey = counted("store", storage.store_subkey)
    node.request_counts = counts


async def _read(dht, node) -> Counter:
    return Counter(node.request_counts)


class DHTRequests:
    """The lookups and stores one DHT node served since this object was made."""

    def __init__(self, dht: hivemind.DHT):
        self.dht = dht
        dht.run_coroutine(_install)

    def count(self, kind: str, key: str) -> int:
        """How many times ``kind`` ("lookup" or "store") reached this node for ``key``."""
        return self.dht.run_coroutine(_read)[kind, DHTID.generate(source=key)]
