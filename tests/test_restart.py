"""A miner SIGKILLed on a fixed ``--dht.port`` restarts at once (issue 14).

Only the neuron's own process is killed, as the OOM killer or pm2's kill timeout does: hivemind's
DHT and averager processes and the p2pd daemon get no signal and no cleanup. They used to survive
(re-parented to init), so the restart found its DHT port taken and exited 2, a pm2 restart loop.
Now they die with the neuron (:mod:`hivetrain.lifeline`): each kill is followed by an immediate
restart that must come up on the same port, and every helper of the killed miner must be gone.
``make test`` kills once; the slow version (``make test-slow``) 20 times.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers.flags import VALIDATOR_TEST_FLAGS
from helpers.polling import records, records_after, wait_until
from helpers.ports import unused_port
from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import SwarmOptions, neuron_args, prepare_chain

START_TIMEOUT = 180  # a miner's start-up is mostly imports: tens of seconds on a loaded machine
HELPERS_GONE_TIMEOUT = 10


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (pid -> program name), read from /proc."""
    found, todo = {}, [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:  # the task ended while we read
                continue
            for child in children:
                try:
                    found[child] = (Path(f"/proc/{child}/comm").read_text().strip())
                except OSError:
                    continue
                todo.append(child)
    return found


def alive(pids) -> list[int]:
    """The pids of ``pids`` still running (zombies count as gone: they hold no port)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running


def kill_and_restart(tmp_path: Path, zygote, kills: int) -> None:
    options = SwarmOptions(out_dir=tmp_path, miners=1, validators=0, block_time=0.5,
                           neuron_flags=VALIDATOR_TEST_FLAGS)
    prepare_chain(options)
    run_dir = tmp_path / "miner1"
    args = neuron_args("miner", "miner1", options, ["--dht.port", str(unused_port())])
    with ProcessGroup(spawn=zygote.spawn) as group:
        mark = None
        neuron = group.start("miner1", run_dir, args)
        for kill in range(1, kills + 1):
            started = time.monotonic()
            wait_until(lambda: records_after(run_dir, "start", mark), START_TIMEOUT,
                       f"start {kill} of the miner", group)
            mark = records(run_dir, "start")[-1]
            helpers = descendants(neuron.process.pid)
            assert "p2pd" in helpers.values(), helpers
            print(f"kill {kill}: up in {time.monotonic() - started:.1f} s, helpers {helpers}")
            group.kill(neuron, helpers=False)
            neuron = group.start("miner1", run_dir, args)  # at once, on the same --dht.port
            wait_until(lambda: not alive(helpers), HELPERS_GONE_TIMEOUT,
                       f"the helpers of the killed miner ({alive(helpers)}) to die with it")
        wait_until(lambda: records_after(run_dir, "start", mark), START_TIMEOUT,
                   "the last restart of the miner", group)
    log = (run_dir / "neuron.log").read_text()
    assert "already in use" not in log


def test_sigkilled_miner_restarts_on_its_fixed_dht_port(tmp_path, zygote):
    kill_and_restart(tmp_path, zygote, kills=1)


@pytest.mark.slow
@pytest.mark.timeout(60 * 21)
def test_sigkilled_miner_restarts_on_its_fixed_dht_port_20_times(tmp_path, zygote):
    kill_and_restart(tmp_path, zygote, kills=20)
