"""Which of the validator's copies of the swarm model judges an answer (in-process, no swarm).

The validator keeps one copy per recent epoch and recomputes every answer at the epoch the miner
reports. Two ways it used to judge honest miners against the wrong copy: it trusted the swarm
tracker (refreshed from the DHT every few seconds) to say whether the miners had moved on, and
it fell back to its newest copy for an epoch it did not hold. Both failed every honest miner of
the round at once (cosines -0.06 / 0.28 / 0.76 in one demo round).
"""

import types

import torch

from hivetrain.config import ValidatorConfig
from hivetrain.model.gpt2 import build_model
from hivetrain.probe.codec import request_fields
from hivetrain.probe.compute import param_digest, probe_loss_and_grad
from hivetrain.probe.schemas import ProbeRequest
from hivetrain.validator.loop import Validator
from hivetrain.validator.scoring import ScoreState

VOCAB, SEQ_LEN = 4096, 32


class Swarm:
    """Stands in for the observer optimizer: the swarm's state per epoch, and a lagging tracker."""

    def __init__(self, model):
        self.model, self.local_epoch = model, 0
        self.swarm_epoch = 0  # what the tracker last read: it lags behind the swarm's steps
        self.states = {0: {k: v.clone() for k, v in model.state_dict().items()}}

    def step(self):
        """The swarm takes an outer step (the tracker has not noticed yet)."""
        epoch = max(self.states) + 1
        other = build_model("tiny", VOCAB, SEQ_LEN, seed=epoch)
        self.states[epoch] = other.state_dict()
        return other

    def load_global_state(self):
        self.local_epoch = max(self.states)
        self.model.load_state_dict(self.states[self.local_epoch])


class Data:
    def heldout_batches(self, n, batch_size, seq_len):
        return [torch.randint(0, VOCAB, (batch_size, seq_len)) for _ in range(n)]


def make_validator(tmp_path):
    model = build_model("tiny", VOCAB, SEQ_LEN, seed=0)
    swarm = Swarm(model)
    validator = Validator(ValidatorConfig(), chain=None, uid=0, model=model, optimizer=swarm,
                          data=Data(), seq_len=SEQ_LEN, telemetry=None, run_dir=tmp_path,
                          run_id="run", scores=ScoreState())
    return validator, swarm


def honest_reply(model, request, epoch):
    result = probe_loss_and_grad(model, torch.tensor(request.input_ids), request.seed,
                                 request.n_coords)
    return types.SimpleNamespace(response=types.SimpleNamespace(
        epoch=epoch, loss=result.loss, coords=result.coords, grad_values=result.grad_values,
        param_digest=param_digest(model)))


def probe_request(epoch):
    batch = torch.randint(0, VOCAB, (4, SEQ_LEN), generator=torch.Generator().manual_seed(7))
    return ProbeRequest(**request_fields(batch), seed=11, expected_epoch=epoch, n_coords=64)


def test_a_miner_ahead_of_the_tracker_makes_the_validator_fetch_that_epoch(tmp_path):
    validator, swarm = make_validator(tmp_path)
    assert validator.sync_model() == 0
    miner_model = swarm.step()
    assert validator.sync_model() == 0, "the tracker has not seen epoch 1: no reason to load"
    assert validator.sync_model(swarm_is_ahead=True) == 1
    assert sorted(validator.snapshots) == [0, 1]
    assert validator.snapshot_digests[1] == param_digest(miner_model)
    request = probe_request(0)
    result = validator.judge(1, "hk", request, honest_reply(miner_model, request, 1), epoch=0)
    assert (result.score, result.reason) == (1.0, "ok")
    assert result.reference_digest == result.param_digest


def test_an_answer_at_an_epoch_the_validator_lacks_is_not_judged_against_another(tmp_path):
    validator, swarm = make_validator(tmp_path)
    validator.sync_model()
    request = probe_request(0)
    miner_model = swarm.step()  # the validator never fetched it
    result = validator.judge(1, "hk", request, honest_reply(miner_model, request, 1), epoch=0)
    assert result.score == 0.3 and "not one the validator holds" in result.reason
    assert result.reference_digest is None
    far = validator.judge(1, "hk", request, honest_reply(miner_model, request, 3), epoch=0)
    assert far.score == 0.3 and "is 3 away from 0" in far.reason


def test_an_answer_two_epochs_ahead_of_the_request_is_current_once_the_validator_fetched_it(tmp_path):
    """A round that outlasts two swarm epochs (update checks on a loaded machine): the miner's
    answer is two epochs past the request, the validator fetches that epoch, and the answer is
    judged current, not 0.3 for the validator's own lag."""
    validator, swarm = make_validator(tmp_path)
    validator.sync_model()
    request = probe_request(0)
    swarm.step()
    miner_model = swarm.step()
    assert validator.sync_model(swarm_is_ahead=True) == 2
    result = validator.judge(1, "hk", request, honest_reply(miner_model, request, 2), epoch=0)
    assert (result.score, result.reason) == (1.0, "ok")
    future = validator.judge(1, "hk", request, honest_reply(miner_model, request, 5), epoch=0)
    assert future.score == 0.3 and "is 3 away from 2" in future.reason
