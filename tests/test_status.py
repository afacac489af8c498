"""``hivetrain status`` when nothing runs: the chain table, quickly, and no DHT traceback.

The chain still holds what the last run committed (a DHT address whose peer is gone, an endpoint
nobody serves), which used to cost 53 s of bootstrap retries and end in a DHT error with no
table at all (issue 14). Now the chain table prints first and the DHT gets one attempt.
"""

import json
import subprocess
import sys
import time

from helpers.ports import unused_port
from hivetrain.chain import Chain, create_dev_wallet
from hivetrain.localnet.swarm import NETUID, SwarmOptions, prepare_chain

RUN_ID = "hivetrain-tiny-0123456789abcdef"
GONE_PEER = "QmW5TRieDjmGSEaozozwLCv7QPWAq8Qnm1P354KWyvjnXy"
# Start-up (python, torch, hivemind imports) is most of it; the bootstrap retries were 30 s.
QUICK_S = 25


def test_status_with_nothing_running_prints_the_chain_table_quickly(tmp_path):
    options = SwarmOptions(out_dir=tmp_path, miners=1, validators=0)
    prepare_chain(options)
    wallet = create_dev_wallet("miner1", "default", str(options.wallet_path))
    chain = Chain.open("embedded", chain_path=str(options.chain_path), netuid=NETUID, wallet=wallet)
    try:
        port = unused_port()
        assert chain.commit_dht_addrs([f"/ip4/127.0.0.1/tcp/{port}/p2p/{GONE_PEER}"], RUN_ID)
        assert chain.serve("127.0.0.1", port)
    finally:
        chain.close()
    command = [sys.executable, "-m", "hivetrain", "status", "--netuid", str(NETUID),
               "--subtensor.network", "embedded", "--chain.path", str(options.chain_path),
               "--dht.host_ip", "127.0.0.1"]
    started = time.monotonic()
    shown = subprocess.run(command, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    print(f"status with nothing running took {took:.1f} s\n{shown.stdout}")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"run_id {RUN_ID} (from the chain, 1 of 1 neurons)" in shown.stdout
    assert f"127.0.0.1:{port}" in shown.stdout and "same" in shown.stdout
    assert "DHT: no progress read (could not reach any of 1 initial DHT peers" in shown.stdout
    assert "Traceback" not in shown.stderr
    assert took < QUICK_S

    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    facts = json.loads(as_json.stdout)
    assert facts["run_id"] == RUN_ID and facts["peers_online"] == 0 and facts["dht_error"]
    assert facts["neurons"][0]["status"] is None
