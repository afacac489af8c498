"""The update evaluation on a real tiny GPT-2 and the embedded corpus, without any network.

An honest update (20 AdamW steps on the miner's assigned data from G) must gain clearly more on
its assigned data than on random data; a zero update gains nothing; training on other data
leaves no mark on the assigned data; a non-finite update is a fact, not an exception.
"""

import copy
import math

import pytest
import torch

from hivetrain.config import DataConfig
from hivetrain.data import load_token_data, load_tokenizer
from hivetrain.model.gpt2 import build_model
from hivetrain.probe.compute import mean_loss
from hivetrain.probe.schemas import UpdateEnvelope
from hivetrain.validator.contribution import ContributionChecker
from hivetrain.validator.scoring import (SCORE_ACCEPTABLE, SCORE_UNACCEPTABLE, UpdateOutcome,
                                         judge_updates)
from hivetrain.validator.update_client import UpdateReply

RUN, EPOCH, SEQ = "run-test", 2, 64


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    data = load_token_data(DataConfig(), load_tokenizer(DataConfig().tokenizer))
    model = build_model("tiny", data.vocab_size, SEQ, 0, False)
    # G after a few rounds of training, as the validator checks it (not the random init, where
    # even a sign-flipped update lowers the loss: the unigram statistics dominate).
    update = trained_update(model, data.train_batches("warm-up", 4, SEQ), steps=40)
    with torch.no_grad():
        for param, change in zip(model.parameters(), update):
            param.sub_(change)
    return data, model


def trained_update(model, batches, steps=20):
    local = copy.deepcopy(model)
    opt = torch.optim.AdamW(local.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(steps):
        batch = next(batches)
        local(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    return [g.detach() - t.detach() for g, t in zip(model.parameters(), local.parameters())]


def evaluate(setup, hotkey, tensors, samples=80):
    data, model = setup
    checker = ContributionChecker(copy.deepcopy(model), data, RUN, SEQ, 4, 4, timeout=5)
    base = [p.detach().clone() for p in checker.trainable]
    random = [data.probe_batch(100 + i, 4, SEQ) for i in range(4)]
    envelope = UpdateEnvelope.model_construct(epoch=EPOCH, samples=samples, digest="0" * 64)
    reply = UpdateReply(envelope, tensors, 0.0, 0)
    outcome = checker._evaluate(reply, hotkey, EPOCH, base, random, mean_loss(checker.model, random), 7)
    return outcome


def test_honest_beats_random_and_the_cheats_do_not(setup):
    data, model = setup
    update = trained_update(model, data.assigned_batches(RUN, "hk", EPOCH, 4, SEQ))
    honest = evaluate(setup, "hk", update)
    elsewhere = evaluate(setup, "hk", trained_update(
        model, data.assigned_batches(RUN, "other", EPOCH, 4, SEQ)))
    zero = evaluate(setup, "hk", [torch.zeros_like(p) for p in model.parameters()])
    flipped = evaluate(setup, "hk", [-t for t in update])
    print({k: (round(o.assigned_gain, 3), round(o.random_gain, 3)) for k, o in
           dict(honest=honest, elsewhere=elsewhere, zero=zero, flipped=flipped).items()})
    assert honest.gap > 0.3 and honest.assigned_gain > 0.3
    assert zero.assigned_gain == zero.random_gain == 0.0
    verdict = judge_updates({1: honest, 2: elsewhere, 3: zero, 4: flipped})
    assert verdict[1][0] == SCORE_ACCEPTABLE, verdict[1]
    assert all(verdict[uid][0] == SCORE_UNACCEPTABLE for uid in (2, 3, 4)), verdict


def test_non_finite_updates_and_states_raise_nothing(setup):
    data, model = setup
    nan = [torch.full_like(p, math.nan) for p in model.parameters()]
    outcome = evaluate(setup, "hk", nan)
    assert outcome.status == "ok" and math.isnan(outcome.assigned_gain)
    assert judge_updates({1: outcome})[1][0] == SCORE_UNACCEPTABLE
    poisoned = copy.deepcopy(model)
    with torch.no_grad():
        next(poisoned.parameters()).fill_(math.inf)
    skipped = evaluate((data, poisoned), "hk", [torch.zeros_like(p) for p in model.parameters()])
    assert skipped.status == "skipped"
    assert judge_updates({1: skipped})[1][0] is None
    assert isinstance(skipped, UpdateOutcome)
