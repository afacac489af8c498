"""Several OS processes share one dev chain file: concurrent writes never lose each other.

Two worker processes start on the same chain block and, at the same time, register hotkeys
through the SDK, bump one shared stake counter (a read-modify-write) and set weights. Every
registration, every increment and every weight row must survive.
"""

from __future__ import annotations

import os
import subprocess
import sys

import bittensor as bt

from hivetrain.chain import DevChain, SubnetParams, create_dev_wallet, init_dev_chain
from hivetrain.chain.subtensor import EMBEDDED_ENDPOINT

BLOCK_TIME = 0.05
NETUID = 1
PER_WORKER = 4

WORKER = """
import sys, time
from hivetrain.chain import Chain, DevChain, load_wallet, register_dev
path, wallet_dir, shared_hotkey, start_block, *names = sys.argv[1:]
chain = DevChain.open(path)
deadline = time.monotonic() + 60
while chain.head() < int(start_block):  # start together, on the chain's own clock
    assert time.monotonic() < deadline
    time.sleep(0.002)
for name in names:
    wallet = load_wallet(name, "default", wallet_dir)
    uid = register_dev(path, 1, wallet)
    chain.add_stake(1, shared_hotkey, 1.0)
    chain.set_validator_permit(1, wallet.hotkey.ss58_address)
    handle = Chain.open("embedded", None, path, 1, wallet, connect_timeout=10)
    assert handle.set_weights([uid], [1.0]), name
    handle.close()
print("done", names)
"""


def test_two_processes_register_and_set_weights_without_lost_updates(tmp_path):
    env = {**os.environ, "BTCLI_TOKEN_SYMBOLS_CACHE": str(tmp_path / "symbols.json")}
    wallet_dir = str(tmp_path / "wallets")
    owner = create_dev_wallet("owner", "default", wallet_dir)
    names = [f"w{i}" for i in range(2 * PER_WORKER)]
    wallets = [create_dev_wallet(name, "default", wallet_dir) for name in names]
    chain, _ = init_dev_chain(tmp_path / "chain.sqlite", BLOCK_TIME, NETUID, owner, SubnetParams(tempo=5))
    shared = owner.hotkey.ss58_address
    start = chain.head() + int(3.0 / BLOCK_TIME)  # time for both interpreters to import
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(chain.path), wallet_dir, shared,
                                 str(start), *names[i::2]],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    outputs = [w.communicate(timeout=90) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]

    sub = bt.Subtensor(EMBEDDED_ENDPOINT, substrate=DevChain.open(chain.path))
    try:
        uids = [sub.query(bt.storage.SubtensorModule.Uids, [NETUID, w.hotkey.ss58_address]) for w in wallets]
        assert sorted(uids) == list(range(len(names)))
        assert sub.query(bt.storage.SubtensorModule.SubnetworkN, [NETUID]) == len(names)
        assert sub.query(bt.storage.SubtensorModule.TotalHotkeyAlpha, [shared, NETUID]) == len(names) * 10**9
        weights = sub.read("weights", netuid=NETUID)
        assert weights == {uid: {uid: 1.0} for uid in range(len(names))}
        # Registration (shielded carrier + inner call) used two coldkey nonces, weights one hotkey nonce.
        def nonce(address: str) -> int:
            return sub.query(("System", "Account"), [address])["nonce"]
        assert [nonce(w.coldkeypub.ss58_address) for w in wallets] == [2] * len(wallets)
        assert [nonce(w.hotkey.ss58_address) for w in wallets] == [1] * len(wallets)
    finally:
        sub.close()
