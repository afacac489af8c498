"""The chain package against the REAL bittensor SDK, with the dev chain plugged in as its substrate.

Every chain interaction below goes through ``bt.Subtensor(..., substrate=DevChain)``: intents
through ``execute``, raw calls through ``submit_call``, reads and the metagraph runtime call.
Time-dependent checks wait on the chain's block number with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import bittensor as bt
import pytest

from hivetrain import spec_version
from hivetrain.chain import (Chain, ChainError, DevChain, SubnetParams, create_dev_wallet, dht_commitment,
                             init_dev_chain, load_wallet, register_dev, stake_dev)
from hivetrain.chain.cli import main as cli_main
from hivetrain.chain.subtensor import EMBEDDED_ENDPOINT

BLOCK_TIME = 0.05
NETUID = 1
UIDS = bt.storage.SubtensorModule.Uids


@pytest.fixture(autouse=True)
def _no_home_writes(tmp_path, monkeypatch):
    """The SDK caches token symbols under ~/.bittensor on connect; keep that in tmp."""
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))


@pytest.fixture
def wallets(tmp_path):
    names = ("owner", "val", "val2", "m1", "m2", "m3", "stranger")
    return {name: create_dev_wallet(name, "default", str(tmp_path / "wallets")) for name in names}


def make_chain(tmp_path, wallets, **params) -> DevChain:
    params = {"tempo": 5, "weights_rate_limit": 4, **params}
    chain, created = init_dev_chain(tmp_path / "chain.sqlite", BLOCK_TIME, NETUID, wallets["owner"],
                                    SubnetParams(**params))
    assert created
    return chain


@pytest.fixture
def chain(tmp_path, wallets) -> DevChain:
    return make_chain(tmp_path, wallets)


@pytest.fixture
def sub(chain):
    subtensor = bt.Subtensor(EMBEDDED_ENDPOINT, substrate=chain)
    yield subtensor
    subtensor.close()


def wait_for_block(chain: DevChain, target: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while chain.head() < target:
        assert time.monotonic() < deadline, f"chain stuck below block {target}"
        time.sleep(BLOCK_TIME / 5)
    return chain.head()


def hotkey(wallet) -> str:
    return wallet.hotkey.ss58_address


def raw_weights(dests: list[int], weights: list[int]):
    """A plain ``set_mechanism_weights`` call, which skips the SDK's client-side preflight."""
    return bt.calls.SubtensorModule.set_mechanism_weights(netuid=NETUID, mecid=0, dests=dests,
                                                          weights=weights, version_key=0)


def validator(chain, wallet, stake: float = 100.0) -> None:
    stake_dev(chain.path, NETUID, hotkey(wallet), stake, permit=True)


# The SDK over the dev chain ---------------------------------------------------------------------


def test_sdk_registers_serves_commits_and_reads_back(sub, wallets):
    result = sub.execute(bt.BurnedRegister(netuid=NETUID), wallets["m1"])
    assert result.success and result.data["shielded"], result  # the MEV-shielded SDK path ran
    assert sub.query(UIDS, [NETUID, hotkey(wallets["m1"])]) == 0
    assert not sub.execute(bt.BurnedRegister(netuid=NETUID), wallets["m1"]).success  # already registered

    assert sub.execute(bt.ServeAxon(netuid=NETUID, ip="10.1.2.3", port=8091), wallets["m1"]).success
    call = bt.calls.Commitments.set_commitment(netuid=NETUID, info={"fields": [{"Raw5": b"hello"}]})
    assert sub.submit_call(call, wallets["m1"], signer="hotkey").success
    assert sub.read("commitment", netuid=NETUID, hotkey_ss58=hotkey(wallets["m1"])).data == "hello"

    graph = sub.subnets.metagraph(NETUID)
    assert graph.hotkeys == [hotkey(wallets["m1"])]
    assert graph.coldkeys == [wallets["m1"].coldkeypub.ss58_address]
    neuron = graph.neurons[0]
    assert neuron.axon == "10.1.2.3:8091" and neuron.commitment.value == "hello"
    assert graph.tempo == 5 and graph.owner_hotkey == hotkey(wallets["owner"])


def test_unregistered_hotkey_gets_the_chain_error(sub, wallets):
    stranger = wallets["stranger"]
    result = sub.submit_call(raw_weights([0], [1]), stranger, signer="hotkey")
    assert not result.success and result.error.name == "HotKeyNotRegisteredInSubNet"
    assert result.error.code is bt.ErrorCode.NOT_REGISTERED
    serve = sub.execute(bt.ServeAxon(netuid=NETUID, ip="10.0.0.1", port=1), stranger)
    assert serve.error.name == "HotKeyNotRegisteredInNetwork"
    commit = sub.submit_call(bt.calls.Commitments.set_commitment(netuid=NETUID, info={"fields": []}),
                             stranger, signer="hotkey")
    assert commit.error.name == "AccountNotAllowedCommit"
    with pytest.raises(bt.ChainError) as refused:  # the SDK's own preflight says the same
        sub.execute(bt.SetWeights(netuid=NETUID, weights={0: 1.0}), stranger)
    assert refused.value.code is bt.ErrorCode.NOT_REGISTERED


def test_set_weights_rate_limit_permit_and_stored_rows(tmp_path, wallets):
    chain = make_chain(tmp_path, wallets, weights_rate_limit=30)
    sub = bt.Subtensor(EMBEDDED_ENDPOINT, substrate=chain)
    for name in ("val", "m1"):
        register_dev(chain.path, NETUID, wallets[name])
    miner_weights = sub.submit_call(raw_weights([0], [1]), wallets["m1"], signer="hotkey")
    assert miner_weights.error.name == "NeuronNoValidatorPermit"  # non-self weights need a permit
    validator(chain, wallets["val"])

    first = sub.execute(bt.SetWeights(netuid=NETUID, weights={0: 1.0, 1: 3.0}), wallets["val"])
    assert first.success
    assert sub.read("weights", netuid=NETUID) == {0: pytest.approx({0: 0.25, 1: 0.75}, abs=1e-4)}
    set_at = sub.query(bt.storage.SubtensorModule.LastUpdate, [NETUID])[0]

    with pytest.raises(bt.ChainError) as preflight:  # the SDK refuses before signing ...
        sub.execute(bt.SetWeights(netuid=NETUID, weights={1: 1.0}), wallets["val"])
    assert preflight.value.code is bt.ErrorCode.RATE_LIMITED
    # ... and the chain enforces it too
    early = sub.submit_call(raw_weights([1], [9]), wallets["val"], signer="hotkey")
    assert chain.head() - set_at < 30, "test too slow to land inside the rate-limit window"
    assert early.error.name == "SettingWeightsTooFast"

    wait_for_block(chain, set_at + 30)
    assert sub.execute(bt.SetWeights(netuid=NETUID, weights={1: 1.0}), wallets["val"]).success
    assert sub.read("weights", netuid=NETUID)[0] == {1: 1.0}
    sub.close()


def test_incentive_is_stake_weighted_after_an_epoch(chain, sub, wallets):
    for name in ("val", "val2", "m1", "m2"):
        register_dev(chain.path, NETUID, wallets[name])
    validator(chain, wallets["val"], stake=300.0)
    validator(chain, wallets["val2"], stake=100.0)
    wait_for_block(chain, chain.head() + 1)  # weights on a uid registered in the same block are masked
    assert sub.execute(bt.SetWeights(netuid=NETUID, weights={2: 1.0}), wallets["val"]).success
    assert sub.execute(bt.SetWeights(netuid=NETUID, weights={2: 1.0, 3: 1.0}), wallets["val2"]).success

    sub.wait_for_epoch(NETUID, timeout=10)  # the SDK watches LastEpochBlock advance
    neurons = sub.subnets.metagraph(NETUID).neurons
    assert [round(n.incentive, 3) for n in neurons] == [0.0, 0.0, 0.875, 0.125]
    assert [round(n.dividends, 3) for n in neurons] == [0.75, 0.25, 0.0, 0.0]


def test_full_subnet_recycles_the_lowest_emission_uid(tmp_path, wallets):
    chain = make_chain(tmp_path, wallets, max_uids=3)
    sub = bt.Subtensor(EMBEDDED_ENDPOINT, substrate=chain)
    try:
        for name in ("val", "m1", "m2"):
            register_dev(chain.path, NETUID, wallets[name])
        validator(chain, wallets["val"])
        wait_for_block(chain, chain.head() + 1)
        assert sub.execute(bt.SetWeights(netuid=NETUID, weights={1: 1.0}), wallets["val"]).success
        sub.wait_for_epoch(NETUID, timeout=10)

        assert register_dev(chain.path, NETUID, wallets["m3"]) == 2  # m2 earned nothing: pruned
        assert sub.query(UIDS, [NETUID, hotkey(wallets["m2"])]) is None
        assert sub.subnets.metagraph(NETUID).hotkeys == [hotkey(wallets[n]) for n in ("val", "m1", "m3")]
    finally:
        sub.close()


def test_block_hashes_are_deterministic_per_height(tmp_path, chain, sub, wallets):
    wait_for_block(chain, 3)
    reopened = DevChain.open(chain.path)
    assert sub.block_info(2).hash == reopened.store.block_hash(2) == chain.store.block_hash(2)
    assert chain.store.block_hash(2) != chain.store.block_hash(3)
    other = DevChain.create(tmp_path / "other.sqlite", BLOCK_TIME)
    assert other.store.block_hash(2) != chain.store.block_hash(2)
    with pytest.raises(bt.ChainError, match="unknown block hash"):
        asyncio.run(chain.query("SubtensorModule", "Tempo", [NETUID], block_hash=other.store.block_hash(2)))


def test_bad_chain_files_give_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(ChainError, match="not a hivetrain dev chain"):
        DevChain.open(garbage)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text)")
    with pytest.raises(ChainError, match="no 'hivetrain-devchain' magic"):
        DevChain.open(foreign)
    old = DevChain.create(tmp_path / "old.sqlite", 1.0)
    with sqlite3.connect(old.path) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(ChainError, match="schema v0"):
        DevChain.open(old.path)
    with pytest.raises(ChainError, match="hivetrain chain init"):
        DevChain.open(tmp_path / "missing.sqlite")


# The Chain facade -------------------------------------------------------------------------------


def open_chain(chain, wallet, netuid=NETUID) -> Chain:
    return Chain.open("embedded", None, str(chain.path), netuid, wallet, connect_timeout=5)


def test_facade_registration_endpoints_and_discovery(chain, wallets):
    val = open_chain(chain, wallets["val"])
    with pytest.raises(ChainError, match="hivetrain chain register --chain.path"):
        val.ensure_registered()
    register_dev(chain.path, NETUID, wallets["val"])
    register_dev(chain.path, NETUID, wallets["m1"])
    miner = open_chain(chain, wallets["m1"])
    assert (val.ensure_registered(), miner.ensure_registered()) == (0, 1)

    assert miner.serve("10.0.0.7", 8091)
    served_at = miner.metagraph(refresh=True)
    assert served_at.axons[1] == "10.0.0.7:8091"
    wait_for_block(chain, chain.head() + 1)
    assert miner.serve("10.0.0.7", 8091)  # unchanged: no new extrinsic
    axon = bt.Subtensor(EMBEDDED_ENDPOINT, substrate=chain).query(bt.storage.SubtensorModule.Axons,
                                                                   [NETUID, miner.hotkey])
    assert axon["block"] < chain.head()

    peer = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"
    miner_addrs = [f"/ip4/10.0.0.7/tcp/4001/p2p/{peer}", f"/ip4/127.0.0.1/udp/4001/quic/p2p/{peer}"]
    assert miner.commit_dht_addrs(miner_addrs, "hivetrain-tiny-0123456789abcdef")
    assert val.commit_dht_addrs(["/ip4/10.0.0.9/tcp/4002/p2p/QmValidator"])
    assert val.committed_run_ids() == {miner.hotkey: "hivetrain-tiny-0123456789abcdef"}
    assert val.discover_dht_addrs() == miner_addrs
    assert miner.discover_dht_addrs() == ["/ip4/10.0.0.9/tcp/4002/p2p/QmValidator"]
    anonymous = Chain.open("embedded", None, str(chain.path), NETUID, None)
    assert set(anonymous.discover_dht_addrs()) == {"/ip4/10.0.0.9/tcp/4002/p2p/QmValidator", *miner_addrs}

    assert miner.metagraph() is served_at  # cached within the cadence ...
    graph = miner.metagraph(refresh=True)  # ... unless asked
    assert graph.hotkeys == [val.hotkey, miner.hotkey] and graph.uid_of(miner.hotkey) == 1
    assert graph.commitments[1].startswith("dht1 ")
    with pytest.raises(ChainError, match="not registered"):
        open_chain(chain, wallets["stranger"]).serve("10.0.0.8", 1)


def test_facade_set_weights_never_raises(tmp_path, wallets):
    chain = make_chain(tmp_path, wallets, weights_version=spec_version, weights_rate_limit=1000)
    for name in ("val", "m1"):
        register_dev(chain.path, NETUID, wallets[name])
    validator(chain, wallets["val"])
    val = open_chain(chain, wallets["val"])
    assert val.weights_rate_limit == 1000
    assert val.set_weights([0, 1], [0.2, 0.8])  # version key = hivetrain.spec_version, accepted
    assert val.weights()[0] == pytest.approx({0: 0.2, 1: 0.8}, abs=1e-4)
    assert not val.set_weights([1], [1.0])  # rate limited
    assert not val.set_weights([0, 1], [0.0, 0.0])  # nothing to set
    assert not open_chain(chain, wallets["stranger"]).set_weights([0], [1.0])  # unregistered
    assert not open_chain(chain, wallets["m1"]).set_weights([0], [1.0])  # no validator permit


def test_facade_version_key_is_spec_version(tmp_path, wallets):
    chain = make_chain(tmp_path, wallets, weights_version=spec_version + 1)
    register_dev(chain.path, NETUID, wallets["val"])
    validator(chain, wallets["val"])
    assert not open_chain(chain, wallets["val"]).set_weights([0], [1.0])  # IncorrectWeightVersionKey


def test_bad_input_fails_fast_with_clear_messages(chain, wallets, tmp_path):
    started = time.monotonic()
    with pytest.raises(ChainError, match="subnet 9 does not exist.*--netuid 9"):
        open_chain(chain, wallets["val"], netuid=9)
    with pytest.raises(ChainError, match="btcli wallet create --wallet nobody --wallet-hotkey hk"):
        load_wallet("nobody", "hk", str(tmp_path / "wallets"))
    with pytest.raises(ChainError, match="needs --chain.path"):
        Chain.open("embedded", None, None, NETUID, None)
    with pytest.raises(ChainError, match="cannot reach ws://127.0.0.1:1 after"):
        Chain.open("ws://127.0.0.1:1", None, None, NETUID, None, connect_timeout=1.5)
    assert time.monotonic() - started < 10

    as_testnet = Chain(bt.Subtensor(EMBEDDED_ENDPOINT, substrate=chain), NETUID, wallets["stranger"], "test")
    assert as_testnet.register_command().startswith("btcli subnets register --netuid 1 --wallet stranger")


def test_dht_commitment_format():
    peer = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"
    addrs = [f"/ip4/1.2.3.4/tcp/1/p2p/{peer}", "/ip4/5.6.7.8/tcp/2", f"/ip4/9.9.9.9/tcp/3/p2p/{peer}",
             "/ip4/1.1.1.1/tcp/4/p2p/QmOther"]
    text, kept = dht_commitment.encode(addrs, 384)
    assert kept == addrs and dht_commitment.decode(text) == addrs
    short, kept = dht_commitment.encode(addrs, 80)
    assert kept == addrs[:1] and dht_commitment.decode(short) == addrs[:1]
    assert dht_commitment.decode("someone else's commitment") == []
    assert dht_commitment.decode_run_id(text) is None


def test_dht_commitment_carries_a_bounded_run_id():
    run_id = "hivetrain-gpt2-medium-0123456789abcdef"
    addrs = [f"/ip4/10.0.0.{i}/tcp/4001/p2p/12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"
             for i in range(20)]
    text, kept = dht_commitment.encode(addrs, 384, run_id)
    assert len(text.encode()) <= 384 and kept and dht_commitment.decode(text) == kept
    assert dht_commitment.decode_run_id(text) == run_id
    longest = "r" * dht_commitment.MAX_RUN_ID_BYTES
    assert dht_commitment.decode_run_id(dht_commitment.encode(addrs, 384, longest)[0]) == longest
    for bad in ("r" * (dht_commitment.MAX_RUN_ID_BYTES + 1), "has space", ""):
        with pytest.raises(ValueError, match="not a run_id"):
            dht_commitment.encode(addrs, 384, bad)
    assert dht_commitment.decode_run_id("dht1 run=" + "r" * 65) is None
    assert dht_commitment.decode_run_id("dht2 run=x") is None
    fields = dht_commitment.to_fields("x" * 300)
    assert [list(f) for f in fields] == [["Raw128"], ["Raw128"], ["Raw44"]]
    with pytest.raises(ValueError):
        dht_commitment.encode(["not an address"], 384)


def test_cli_creates_only_a_wallet_it_was_told_to(tmp_path, capsys):
    """Without --wallet.name, init/register refuse to add a password-less ``default`` coldkey."""
    common = ["--chain.path", str(tmp_path / "c.sqlite"), "--wallet.path", str(tmp_path / "w")]
    for command in ("init", "register"):
        assert cli_main(["chain", command, *common]) == 1
        err = capsys.readouterr().err
        assert "creates a password-less dev wallet" in err and "--wallet.name NAME" in err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists() and not (tmp_path / "c.sqlite").exists()
    create_dev_wallet("default", "default", str(tmp_path / "w"))  # an existing one is used
    assert cli_main(["chain", "init", *common]) == 0


def test_cli_init_register_stake_neurons_weights(tmp_path, capsys):
    common = ["--chain.path", str(tmp_path / "c.sqlite"), "--wallet.path", str(tmp_path / "w")]
    assert cli_main(["chain", "init", *common, "--chain.block_time", str(BLOCK_TIME), "--tempo", "3",
                     "--wallet.name", "owner"]) == 0
    assert cli_main(["chain", "register", *common, "--wallet.name", "v"]) == 0
    assert cli_main(["chain", "register", *common, "--wallet.name", "m"]) == 0
    assert cli_main(["chain", "stake", *common, "--wallet.name", "v", "--amount", "5",
                     "--validator-permit"]) == 0
    chain = DevChain.open(tmp_path / "c.sqlite")
    wait_for_block(chain, chain.head() + 1)  # so the epoch does not mask weights on uid 1 as outdated
    assert cli_main(["chain", "weights", *common, "--wallet.name", "v", "--set", "0=1", "1=3"]) == 0
    wait_for_block(chain, chain.head() + 5)  # past the next epoch (tempo 3)
    capsys.readouterr()
    assert cli_main(["chain", "neurons", *common]) == 0
    out = capsys.readouterr().out
    assert "INCENTIVE" in out and "LAST_WEIGHTS" in out and "1:0.75 0:0.25" in out
    assert "0.7500" in out and "5.000" in out
    assert cli_main(["chain", "neurons", *common, "--netuid", "4"]) == 1
    assert "subnet 4 does not exist" in capsys.readouterr().err
    assert cli_main(["chain", "register", *common, "--subtensor.network", "finney"]) == 1
