"""The probe both sides run: deterministic, faithful to the real gradient, and side-effect free."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hivetrain.probe.compute import (cosine, param_digest, probe_coords, probe_loss_and_grad,
                                   trainable_parameters)


def tiny_model(seed=0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=512,
                                      n_positions=64, bos_token_id=0, eos_token_id=0))


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def batch():
    return torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))


def test_probe_is_deterministic_with_dropout_configured(model, batch):
    model.train()  # dropout is on in train mode; the probe must switch it off
    first, second = (probe_loss_and_grad(model, batch, seed=5) for _ in range(2))
    assert first == second
    assert model.training  # mode restored
    assert len(first.coords) == len(first.grad_values) == 64


def test_probe_matches_an_ordinary_backward(model, batch):
    result = probe_loss_and_grad(model, batch, seed=11, n_coords=32)
    model.eval()
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    params = [p for _, p in trainable_parameters(model)]
    expected = [params[p].grad.reshape(-1)[i].item() for p, i in result.coords]
    model.zero_grad(set_to_none=True)
    model.train()
    assert result.loss == pytest.approx(loss.item(), rel=1e-6)
    assert result.grad_values == pytest.approx(expected, rel=1e-5, abs=1e-10)


def test_probe_leaves_accumulated_grads_alone(model, batch):
    params = [p for _, p in trainable_parameters(model)]
    for param in params:
        param.grad = torch.full_like(param, 0.5)
    probe_loss_and_grad(model, batch, seed=3)
    assert all(torch.equal(param.grad, torch.full_like(param, 0.5)) for param in params)
    model.zero_grad(set_to_none=True)


def test_coordinates_depend_on_the_seed_only():
    sizes = [10, 1, 300, 7]
    coords = probe_coords(sizes, seed=42, n_coords=50)
    assert coords == probe_coords(sizes, seed=42, n_coords=50)
    assert coords != probe_coords(sizes, seed=43, n_coords=50)
    assert coords == sorted(set(coords)) and len(coords) == 50
    assert all(0 <= index < sizes[param] for param, index in coords)
    assert probe_coords([3], seed=0, n_coords=3) == [(0, 0), (0, 1), (0, 2)]


def test_coordinates_index_trainable_parameters_sorted_by_name(model, batch):
    names = [name for name, _ in trainable_parameters(model)]
    assert names == sorted(names) and "lm_head.weight" not in names  # tied: counted once
    other = tiny_model(seed=1)  # other weights, same shapes: same coordinates
    assert (probe_loss_and_grad(model, batch, seed=9).coords
            == probe_loss_and_grad(other, batch, seed=9).coords)


@pytest.mark.parametrize("ids, n_coords, message", [
    (torch.tensor([[1, 512]]), 8, "token ids"),
    (torch.zeros(1, 65, dtype=torch.long), 8, "positions"),
    (torch.zeros(3, dtype=torch.long), 8, "batch"),
    (torch.zeros(1, 4, dtype=torch.long), 0, "n_coords"),
    (torch.zeros(1, 4, dtype=torch.long), 10**9, "n_coords"),
])
def test_probe_refuses_what_the_model_cannot_run(model, ids, n_coords, message):
    with pytest.raises(ValueError, match=message):
        probe_loss_and_grad(model, ids, seed=0, n_coords=n_coords)


def test_param_digest_tracks_the_weights():
    a, b = tiny_model(seed=0), tiny_model(seed=0)
    digest = param_digest(a)
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert digest == param_digest(b)
    with torch.no_grad():
        b.transformer.h[0].mlp.c_fc.bias[0] += 1e-6
    assert param_digest(b) != digest


def test_cosine():
    assert cosine([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [-3.0, 0.0]) == pytest.approx(-1.0)
    assert cosine([1.0, 0.0], [0.0, 1.0]) == 0.0
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0
    assert cosine([math.nan, 1.0], [1.0, 1.0]) == 0.0
    assert cosine([], []) == 0.0
    with pytest.raises(ValueError):
        cosine([1.0], [1.0, 2.0])
