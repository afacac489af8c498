"""Real miner processes on loopback averaging through hivemind (DiLoCo), on an embedded dev chain.

One swarm is shared by the tests of this module (starting peers is the slow part): two miners
train, a third joins late, one is stopped and restarted, one is killed mid-round and restarted. No miner is given --dht.initial_peers:
each finds the others through the DHT addresses committed on chain. Every wait polls the
miners' own metrics files against a deadline; nothing sleeps in place of synchronisation.
"""

import json

import pytest

from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import SwarmOptions, neuron_args, prepare_chain
from hivetrain.miner.neuron import PEER_FILE
from helpers.cli import run_commands
from helpers.polling import current_run, records, records_after, wait_until

# hivemind's all-reduce adds "average - local" to each peer's tensors, exact in float32 for most
# values but not all (see param_sketch), so peers are compared with a tolerance far below one
# optimizer step (~lr = 3e-3): a peer that missed a round is off by about that much everywhere.
SAME_MODEL = 1e-6

FLAGS = ["--model.preset", "tiny", "--data.seq_len", "64", "--train.batch_size", "4",
         "--train.inner_steps", "20", "--train.matchmaking_time", "2",
         "--train.averaging_timeout", "20", "--train.log_every", "2", "--train.eval_batches", "2",
         "--train.checkpoint_every", "2", "--train.grad_compression", "none",
         "--train.lr", "3e-3", "--train.warmup_epochs", "0", "--wandb.off"]


def epoch_digests(run_dir):
    return {r["epoch"]: r["digest"] for r in records(run_dir, "epoch")}


def epoch_sketches(run_dir):
    return {r["epoch"]: r["sketch"] for r in records(run_dir, "epoch")}


def max_difference(first, second):
    return max(abs(x - y) for x, y in zip(first, second))


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, zygote):
    options = SwarmOptions(out_dir=tmp_path_factory.mktemp("swarm"), miners=3, validators=0,
                           block_time=0.5, neuron_flags=FLAGS)
    prepare_chain(options)
    dirs = {name: options.out_dir / name for name in ("miner1", "miner2", "miner3")}
    with ProcessGroup(grace_seconds=30, spawn=zygote.spawn) as group:
        first = group.start("miner1", dirs["miner1"], neuron_args("miner", "miner1", options))
        group.wait_for_file(first, PEER_FILE, 180)
        second = group.start("miner2", dirs["miner2"], neuron_args("miner", "miner2", options))
        group.wait_for_file(second, PEER_FILE, 180)
        yield group, dirs, options
        group.kill_all()  # a clean stop is tested on its own (test_stop, test_localnet)


def identical_epochs(first_dir, second_dir, after: int = -1) -> list[int]:
    """Epochs after ``after`` both recorded, at which the two models are the same.

    A round that fails (a timeout on a busy machine) lets peers step apart for an epoch, until
    the next state averaging brings them back together, so not every epoch has to match.
    """
    first, second = epoch_sketches(first_dir), epoch_sketches(second_dir)
    common = [e for e in sorted(set(first) & set(second)) if e > after]
    return [e for e in common if max_difference(first[e], second[e]) < SAME_MODEL]


def averaged_together(first_dir, second_dir) -> list[int]:
    """Epochs both peers closed in one group of the two of them, holding the same parameters.

    Identical parameters alone are not averaging: a peer that joins downloads the swarm's state,
    and its next epoch can match the first peer's before the two ever averaged."""
    groups = [{r["epoch"]: r["group"] for r in records(run_dir, "epoch")}
              for run_dir in (first_dir, second_dir)]
    return [e for e in identical_epochs(first_dir, second_dir)
            if len(groups[0][e]) == 2 and groups[0][e] == groups[1][e]]


def test_peers_average_to_identical_parameters_and_loss_falls(swarm):
    group, dirs, _ = swarm
    wait_until(lambda: averaged_together(dirs["miner1"], dirs["miner2"]), 300,
               "an epoch both peers closed averaging together, with the same parameters", group)
    first = wait_until(lambda: records(dirs["miner1"], "train"), 60, "a held-out evaluation",
                       group)[0]
    wait_until(lambda: [r for r in records(dirs["miner1"], "train")
                        if r["heldout_loss"] < first["heldout_loss"] - 0.5], 180,
               "the held-out loss to fall by 0.5 from the first evaluation", group)


def test_independent_training_would_not_look_identical(swarm):
    """The tolerance is meaningful: consecutive epochs of one peer differ by far more."""
    _, dirs, _ = swarm
    sketches = epoch_sketches(dirs["miner1"])
    epochs = sorted(sketches)
    assert min(max_difference(sketches[a], sketches[b]) for a, b in zip(epochs, epochs[1:])) \
        > 1000 * SAME_MODEL


def test_late_joiner_finds_the_swarm_on_chain_and_loads_its_state(swarm):
    group, dirs, options = swarm
    swarm_epoch = max(epoch_digests(dirs["miner1"]))
    late = group.start("miner3", dirs["miner3"], neuron_args("miner", "miner3", options))
    start = wait_until(lambda: records(dirs["miner3"], "start"), 180, "the late miner to start",
                       group)
    assert start[0]["epoch"] >= swarm_epoch, "the late joiner did not catch up before training"
    wait_until(lambda: identical_epochs(dirs["miner3"], dirs["miner1"]), 300,
               "an epoch at which the late joiner holds the swarm's parameters", group)
    group.stop(late)


def test_restarted_peer_resumes_from_its_checkpoint(swarm):
    group, dirs, options = swarm
    neuron_b = next(n for n in group.neurons if n.name == "miner2")
    assert group.stop(neuron_b) == 0, "SIGTERM should stop a miner cleanly"
    stop = records(dirs["miner2"], "stop")[-1]
    assert (dirs["miner2"] / "checkpoint.pt").exists()
    peer_id = json.loads((dirs["miner2"] / PEER_FILE).read_text())["peer_id"]
    group.start("miner2", dirs["miner2"], neuron_args("miner", "miner2", options))
    start = wait_until(lambda: records_after(dirs["miner2"], "start", stop), 180,
                       "the restarted miner's start record", group)[0]
    assert start["resumed_epoch"] == stop["epoch"]
    assert start["peer_id"] == peer_id, "the libp2p identity should survive a restart"


def test_killed_peer_does_not_stall_the_swarm_and_rejoins_from_the_global_state(swarm):
    group, dirs, options = swarm
    victim = next(n for n in group.neurons if n.name == "miner2")
    wait_until(lambda: current_run(dirs["miner2"], "epoch"), 180,
               "the restarted miner to finish an outer step", group)
    at_kill = records(dirs["miner1"], "epoch")[-1]
    group.kill(victim)  # SIGKILL mid-round: no checkpoint, no goodbye

    def ended_alone():
        """The survivor's first round that ended alone after the kill (the round the dead peer
        was in, or, if that one had already averaged, the next)."""
        return next((r for r in records_after(dirs["miner1"], "epoch", at_kill)
                     if r["rounds_alone"] > at_kill["rounds_alone"]), None)

    first_alone = wait_until(ended_alone, 180, "a round the survivor ended alone", group)
    # A round with the dead peer ends for the survivor by --train.averaging_timeout (20 s, plus
    # matchmaking_time to start), and it steps on with its own change: this epoch record is that
    # outer step, so the survivor did not stall. (Waiting for its next epoch as well cost a second
    # 20 s round, the dead peer's records still on the DHT, before the restart below.)
    assert first_alone["averaging_seconds"] < 20 + 2 + 10
    swarm_epoch = records(dirs["miner1"], "epoch")[-1]["epoch"]
    group.start("miner2", dirs["miner2"], neuron_args("miner", "miner2", options))
    wait_until(lambda: identical_epochs(dirs["miner2"], dirs["miner1"], after=swarm_epoch),
               300, "the restarted peer to hold the swarm's parameters after an outer step",
               group)


def test_status_and_export_find_the_run_without_training_flags(swarm, zygote, tmp_path):
    """The run_id comes from the chain and the recipe from the miners (issue 14): no flag of
    FLAGS is repeated, and flags that make another run are named in a warning. (``status``
    without any flag, on the chain alone: tests/test_validator.py.)"""
    group, dirs, options = swarm
    run_id = json.loads((dirs["miner1"] / PEER_FILE).read_text())["run_id"]
    out = tmp_path / "export"
    wrong, done = run_commands(
        zygote, options,
        [("status", "--json", "--model.preset", "tiny", "--train.inner_steps", "21"),
         ("export", "--out", str(out), "--neuron.dir", str(tmp_path / "exporter"))], timeout=300)
    assert wrong.returncode == 0, wrong.stderr[-2000:]
    facts = json.loads(wrong.stdout)
    assert facts["run_id"] == run_id and facts["run_id_from"].startswith("the chain")
    assert facts["peers_online"] >= 2
    assert f"but the swarm trains {run_id}" in wrong.stderr
    assert "--model.preset --train.inner_steps" in wrong.stderr

    assert done.returncode == 0, done.stderr[-2000:]
    assert f"(run {run_id})" in done.stdout and "warning" not in done.stderr
    assert (out / "config.json").exists()


def test_corrupt_checkpoint_is_moved_aside_not_lost(tmp_path):
    from hivetrain.miner.checkpoint import load_checkpoint

    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert load_checkpoint(tmp_path, "run") is None
    aside = list(tmp_path.glob("checkpoint.pt.corrupt.*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"not a checkpoint"

