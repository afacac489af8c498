"""A real miner whose probe answers cheat in one way, for the validator tests.

    python tests/helpers/adversarial_miner.py MODE miner <miner flags>

MODE is ``lie_loss`` (reports a lower loss than it computed), ``wrong_grad`` (random gradient
values) or ``other_model`` (answers from a model it does not train: a different seed). The
miner otherwise trains and serves exactly like ``hivetrain miner``.

Proof-of-training modes (probes answered honestly; what it trains or serves as its update is
what cheats), see the block at the end: ``freeloader``, ``copier``, ``wrong_data``, ``lazy``,
``stale``, ``proxy`` (serves another miner's probe answers and update as its own),
``two_faced`` (publishes its honest update, averages another) and ``dodger`` (trains only the
epochs it expects the validator's rotation to check).
"""

import random
import sys

import torch
from transformers import GPT2LMHeadModel

from hivetrain.cli import main
from hivetrain.miner import service
from hivetrain.probe.compute import probe_loss_and_grad

MODE = sys.argv.pop(1)
honest_probe = service.MinerService.probe
other_models = {}


def cheating_probe(self, request):
    answer = honest_probe(self, request)
    if MODE == "lie_loss":
        answer["loss"] *= 0.7
    elif MODE == "wrong_grad":
        rng = random.Random(request.seed)
        answer["grad_values"] = [rng.gauss(0.0, 1e-3) for _ in answer["grad_values"]]
    elif MODE == "other_model":
        if "model" not in other_models:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(12345)
                other_models["model"] = GPT2LMHeadModel(self.trainer.model.config)
        result = probe_loss_and_grad(other_models["model"], torch.tensor(request.input_ids),
                                     request.seed, request.n_coords)
        answer.update(loss=result.loss, grad_values=result.grad_values)
    else:
        raise SystemExit(f"unknown mode {MODE}")
    return answer


# ---- proof-of-training adversaries (issue 11) ---------------------------------------------
# Each patches one thing in this child process only; the validator and honest miners are
# untouched processes.
#   freeloader  no inner steps (the optimizer's step is skipped), follows the global state,
#               claims the samples of its (untrained) batches;
#   copier      trains nothing and serves, as its own, the update another miner sent for the
#               same epoch (HIVETRAIN_COPY_FROM = that miner's hotkey), fetched with a colluding
#               validator's permit (HIVETRAIN_COLLUDER = wallet path:name);
#   wrong_data  trains every step, but on another hotkey's assigned data;
#   lazy        takes one inner step in ten and claims the samples of all ten;
#   stale       serves, labelled as the epoch asked for, its oldest kept update;
#   proxy       trains nothing; forwards each probe and each update request to another miner
#               (the same source and colluder as the copier) and serves that miner's answers,
#               re-signed by its own hotkey, as its own.
#   two_faced   trains and publishes exactly like an honest miner, but sends random noise of
#               its change's norm into the all-reduce: no reducer bound catches it.
#   dodger      trains like an honest miner in the epochs e with e mod HIVETRAIN_DODGE_CYCLE
#               == HIVETRAIN_DODGE_PHASE (the epochs a rotation by epoch number would check
#               it in) and takes no inner steps in the others, claiming their samples.
# The source miner is HIVETRAIN_COPY_FROM (hotkey) at HIVETRAIN_COPY_AT (ip:port of its API).
TRAINING_MODES = ("freeloader", "copier", "wrong_data", "lazy", "stale", "proxy", "two_faced",
                  "dodger")


def _patch_inner_steps(every):
    """Let only one ``DiLoCoOptimizer.inner.step`` in ``every`` through (0: none at all)."""
    from hivetrain.swarm import diloco

    original_init = diloco.DiLoCoOptimizer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        real_step, calls = self.inner.step, [0]

        def step(*a, **k):
            calls[0] += 1
            if every and calls[0] % every == 0:
                return real_step(*a, **k)
            return None

        self.inner.step = step

    diloco.DiLoCoOptimizer.__init__ = init


def _patch_dodger():
    """Let the inner steps through only in the epochs the dodger expects to be checked in."""
    import os

    from hivetrain.swarm import diloco

    cycle = int(os.environ["HIVETRAIN_DODGE_CYCLE"])
    phase = int(os.environ["HIVETRAIN_DODGE_PHASE"])
    original_init = diloco.DiLoCoOptimizer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        real_step = self.inner.step

        def step(*a, **k):
            if self.local_epoch % cycle == phase:
                return real_step(*a, **k)
            return None

        self.inner.step = step

    diloco.DiLoCoOptimizer.__init__ = init


def _patch_wrong_data():
    """Train on another identity's shards, re-drawn while they overlap the miner's own: in one
    fresh-clone run a plain ``hotkey + "-elsewhere"`` window shared 2 of its 4 shards with the
    assigned one (a 7-in-256 chance per epoch), and that epoch's update rightly passed."""
    from hivetrain.data import tokens

    assigned = tokens.TokenData.assigned_batches

    def elsewhere(self, run_id, hotkey, epoch, batch_size, seq_len):
        if not hasattr(self, "assigned_window"):  # a hub stream: no shards to keep apart
            return assigned(self, run_id, hotkey + "-elsewhere", epoch, batch_size, seq_len)
        own = set(self.assigned_window(run_id, hotkey, epoch, seq_len))
        for attempt in range(64):
            other = f"{hotkey}-elsewhere-{attempt}"
            if own.isdisjoint(self.assigned_window(run_id, other, epoch, seq_len)):
                break
        return assigned(self, run_id, other, epoch, batch_size, seq_len)

    tokens.TokenData.assigned_batches = elsewhere


def _patch_stale():
    from hivetrain.swarm.updates import Update

    def update(self, epoch):
        history = self.updates()
        older = [e for e in history.epochs() if e < epoch]
        if not older:
            return None
        old = history.get(older[0])
        return Update(epoch, old.tensors, old.samples)

    service.MinerService.update = update


def _patch_two_faced():
    """Average noise of its change's size where the honest miner averages ``change``; the update
    it keeps and serves (recorded before the all-reduce) stays the honest one.

    Noise passes every reducer bound: the same norm per tensor (no clipping), a weight of its
    real samples, and a direction near orthogonal to everyone's (a sign flip points against the
    group's median and is banned by the reducers once three peers average together, so it would
    test them, not the validator's consistency check)."""
    from hivetrain.swarm import diloco

    average = diloco.DiLoCoOptimizer._average

    def noised(self, change, samples):
        noise = [torch.randn_like(tensor) for tensor in change]
        return average(self, [n * (tensor.norm() / n.norm()) for n, tensor in zip(noise, change)],
                       samples)

    diloco.DiLoCoOptimizer._average = noised


def _colluding_source():
    """``(colluder wallet, (uid, hotkey, ip, port) of the source miner)`` from the environment.

    The address comes from the environment, not the chain: the miner's service holds no chain
    handle, and the test knows the source's API port from its peer file anyway."""
    import os

    from hivetrain.chain.wallets import load_wallet

    path, name = os.environ["HIVETRAIN_COLLUDER"].rsplit(":", 1)
    ip, _, port = os.environ["HIVETRAIN_COPY_AT"].rpartition(":")
    return load_wallet(name, "default", path), (0, os.environ["HIVETRAIN_COPY_FROM"], ip, int(port))


def _patch_copier():
    import asyncio

    from hivetrain.swarm.updates import Update
    from hivetrain.validator.update_client import UpdateReply, fetch_updates

    colluder, source = _colluding_source()

    def update(self, epoch):
        shapes = [p.shape for p in self.trainer.model.parameters() if p.requires_grad]
        reply, _ = asyncio.run(fetch_updates(colluder, [source], epoch, shapes, 8.0))[source[0]]
        if not isinstance(reply, UpdateReply):
            return None
        return Update(epoch, tuple(reply.tensors), reply.envelope.samples)

    service.MinerService.update = update


def _patch_proxy():
    """Answer each probe with the source's answer to the same request (the API signs it with
    this miner's hotkey and binds it to the validator's request), and serve its update."""
    import asyncio

    from hivetrain.probe.schemas import ProbeAnswer
    from hivetrain.validator.prober import probe_miners

    colluder, source = _colluding_source()

    def probe(self, request):
        reply = asyncio.run(probe_miners(colluder, [source], request, 8.0))[source[0]]
        if reply is None:
            raise ValueError("the proxied miner did not answer")
        return {name: getattr(reply.response, name) for name in ProbeAnswer.model_fields}

    service.MinerService.probe = probe
    _patch_copier()


if MODE in TRAINING_MODES:
    if MODE in ("freeloader", "copier", "proxy"):
        _patch_inner_steps(0)
    if MODE == "copier":
        _patch_copier()
    elif MODE == "proxy":
        _patch_proxy()
    elif MODE == "wrong_data":
        _patch_wrong_data()
    elif MODE == "lazy":
        _patch_inner_steps(10)
    elif MODE == "stale":
        _patch_stale()
    elif MODE == "two_faced":
        _patch_two_faced()
    elif MODE == "dodger":
        _patch_dodger()
else:
    service.MinerService.probe = cheating_probe

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
