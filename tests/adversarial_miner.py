"""A real miner whose probe answers cheat in one way, for the validator tests.

    python tests/adversarial_miner.py MODE miner <miner flags>

MODE is ``lie_loss`` (reports a lower loss than it computed), ``wrong_grad`` (random gradient
values) or ``other_model`` (answers from a model it does not train: a different seed). The
miner otherwise trains and serves exactly like ``hivetrain miner``.
"""

import random
import sys

import torch
from transformers import GPT2LMHeadModel

from hivetrain.cli import main
from hivetrain.miner import service
from hivetrain.model.probe import probe_loss_and_grad

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


service.MinerService.probe = cheating_probe

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
