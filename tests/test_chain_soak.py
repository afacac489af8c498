"""Crash safety of the dev chain file by soak (``make test-slow``): SIGKILL ``hivetrain chain``
writes.

A real process runs the real ``hivetrain chain stake`` command in a loop (one CLI invocation
after another in one interpreter, so the kills land in writes, not in imports), each adding 1
token of stake and printing the new total. Every dev-chain write is one ``BEGIN IMMEDIATE``
transaction on an SQLite file in WAL mode; each call also runs the epochs that came due, which
writes emissions across several tables. The writer is killed with SIGKILL at a random moment
after its first printed write, ``HIVETRAIN_SOAK_KILLS`` times (default 20). After every kill:

* the file opens as a dev chain and SQLite's ``integrity_check`` says ``ok``;
* the stake is the last total the writer printed, or one write past it (that write committed
  but the kill came before its line): a write is all there or not there at all;
* the next writer carries on from it (its first total is one token more).

``HIVETRAIN_SOAK_SEED`` makes the moments repeatable.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from hivetrain.chain import DevChain, create_dev_wallet
from hivetrain.chain.cli import main as cli_main
from helpers.polling import wait_until

KILLS = int(os.environ.get("HIVETRAIN_SOAK_KILLS", "20"))
SEED = int(os.environ.get("HIVETRAIN_SOAK_SEED", str(random.randrange(2 ** 32))))
pytestmark = pytest.mark.slow
NETUID = 1
RAO = 10 ** 9
# Seconds after the writer's first printed write before the SIGKILL.
KILL_AFTER = (0.0, 1.0)
WRITER = ("import sys\nfrom hivetrain.cli import main\n"
          "while main(sys.argv[1:]) == 0:\n    pass\nsys.exit('a stake write failed')\n")


class Writer:
    """One life of the looping ``hivetrain chain stake`` process; its printed totals (rao)."""

    def __init__(self, common, env):
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, "chain", "stake", *common, "--wallet.name", "v",
             "--amount", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.totals: list[int] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        # "<hotkey> now has 12.000000000 stake on subnet 1"
        for line in self.process.stdout:
            if " now has " in line:
                self.totals.append(round(float(line.split(" now has ")[1].split()[0]) * RAO))

    def kill(self):
        self.process.kill()
        self.process.wait()
        self.reader.join()


def stake_on_file(path, hotkey) -> int:
    """The stake ``hotkey`` holds in the chain file, read after an integrity check."""
    DevChain.open(path)  # raises ChainError with the reason on a file it cannot use
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT rao FROM stake WHERE netuid = ? AND hotkey = ?",
                            (NETUID, hotkey)).fetchone()[0]
    finally:
        conn.close()


def test_sigkilled_chain_writes_leave_a_readable_chain_file(tmp_path, capsys):
    rng = random.Random(SEED)
    path = tmp_path / "chain.sqlite"
    common = ["--chain.path", str(path), "--wallet.path", str(tmp_path / "wallets")]
    assert cli_main(["chain", "init", *common, "--chain.block_time", "0.05", "--tempo", "3",
                     "--wallet.name", "owner"]) == 0
    assert cli_main(["chain", "register", *common, "--wallet.name", "v"]) == 0
    hotkey = create_dev_wallet("v", "default", str(tmp_path / "wallets")).hotkey.ss58_address
    # Unbuffered: each total reaches the pipe before the next write begins.
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "BTCLI_TOKEN_SYMBOLS_CACHE": str(tmp_path / "token_symbols.json")}
    expected_next = RAO  # the first write's total
    in_flight = 0
    for kill in range(KILLS):
        writer = Writer(common, env)
        try:
            wait_until(lambda: writer.totals or writer.process.poll() is not None, 120,
                       "the writer's first stake write")
            assert writer.totals, writer.process.stderr.read()
            assert writer.totals[0] == expected_next, (kill, writer.totals[:3], expected_next)
            time.sleep(rng.uniform(*KILL_AFTER))  # the random kill moment is the point of a soak
        finally:
            writer.kill()
        last = writer.totals[-1]
        left = stake_on_file(path, hotkey)
        assert left in (last, last + RAO), (kill, left, last)
        in_flight += left != last
        expected_next = left + RAO
    capsys.readouterr()
    assert cli_main(["chain", "neurons", *common]) == 0
    assert f"{expected_next / RAO - 1:.3f}" in capsys.readouterr().out
    with capsys.disabled():
        print(f"chain soak seed {SEED}: {KILLS} kills, the file was readable after every one; "
              f"{in_flight} landed after a write committed and before it was printed; final "
              f"stake {expected_next / RAO - 1:.0f}")
