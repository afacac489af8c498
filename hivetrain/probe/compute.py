"""What miner and validator compute alike: the probe's loss and gradient coordinates, and the
losses that measure an update.

A validator checks that a miner really holds the swarm's current model by sending it a batch of
held-out data (tokens; for multimodal models also labels and images) and a seed. Both sides run
:func:`probe_loss_and_grad` on that batch: the loss shows the miner's weights are as trained as
the validator's, and a handful of gradient entries at seed-chosen coordinates show the miner ran
the real backward pass rather than echoing a number.
Coordinates are drawn from the seed alone, so the validator knows them before the miner answers
and a miner cannot pick the entries it happens to have.

The computation is deterministic for given weights: eval mode (dropout off), float32, no
autocast. Gradients come from ``torch.autograd.grad``, so the ``.grad`` buffers that a training
loop may be accumulating into are never touched.

An update ``u = G_e - theta`` (:mod:`hivetrain.swarm.updates`) is measured by the loss it removes:
:func:`mean_loss` at ``G_e`` and again after :func:`set_shifted` put ``G_e - u`` in the model;
:func:`update_cosines` gives, for each of an epoch's updates, its cosine with every other one (copies).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from hivetrain.image_tokens import LOWEST_PLACEHOLDER
from hivetrain.model.gpt2 import param_digest
from hivetrain.model.inputs import Inputs, model_inputs

__all__ = ["ProbeResult", "probe_loss_and_grad", "probe_coords", "trainable_parameters",
           "param_digest", "cosine", "mean_loss", "set_shifted", "update_cosines"]


@dataclass(frozen=True)
class ProbeResult:
    """What one side computed. ``coords[i]`` is ``(param_index, flat_index)`` into the trainable
    parameters sorted by name, and ``grad_values[i]`` the gradient there."""

    loss: float
    coords: list[tuple[int, int]]
    grad_values: list[float]


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters coordinates index into: trainable, tied ones counted once, sorted by name."""
    return sorted((item for item in model.named_parameters() if item[1].requires_grad),
                  key=lambda item: item[0])


def probe_coords(sizes: list[int], seed: int, n_coords: int) -> list[tuple[int, int]]:
    """``n_coords`` distinct entries drawn uniformly over all ``sum(sizes)`` scalars, from ``seed``.

    ``random.Random`` is used because its integer sampling is specified and stable across Python
    versions and platforms, so miner and validator always agree; sorting makes the order canonical.
    """
    total = sum(sizes)
    if not 0 < n_coords <= total:
        raise ValueError(f"n_coords must be in [1, {total}], got {n_coords}")
    flat = sorted(random.Random(seed).sample(range(total), n_coords))
    coords, param_index, offset = [], 0, 0
    for index in flat:
        while index >= offset + sizes[param_index]:
            offset += sizes[param_index]
            param_index += 1
        coords.append((param_index, index - offset))
    return coords


def probe_loss_and_grad(model: torch.nn.Module, batch: torch.Tensor | Inputs, seed: int,
                        n_coords: int = 64) -> ProbeResult:
    """Loss of ``model`` on ``batch`` and its gradient at seeded coordinates of trainable parameters.

    :param model: GPT-2 or multimodal GPT-2 (anything taking ``input_ids`` and ``labels``).
    :param batch: ``[batch, seq]`` token ids (their own labels) or a dict of model inputs
        (:func:`hivetrain.model.inputs.model_inputs`); moved to the model's device.
    :raises ValueError: when the batch does not fit the model (token ids outside the vocabulary,
        sequence longer than the position table, image spans without images) or ``n_coords`` is
        out of range.
    """
    named = trainable_parameters(model)
    params = [param for _, param in named]
    device = params[0].device
    inputs = model_inputs(batch, device)
    _check_fits(model, inputs)
    coords = probe_coords([param.numel() for param in params], seed, n_coords)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            loss = model(**inputs).loss
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        model.train(was_training)
    # An unused parameter (none in GPT-2) has no gradient, which is a gradient of zero.
    flat = [(torch.zeros_like(param) if grad is None else grad).reshape(-1)
            for grad, param in zip(grads, params)]
    values = torch.stack([flat[p][i] for p, i in coords])
    return ProbeResult(loss=loss.item(), coords=coords, grad_values=values.float().cpu().tolist())


def _check_fits(model: torch.nn.Module, inputs: Inputs) -> None:
    input_ids, labels = inputs["input_ids"], inputs["labels"]
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must be [batch, seq>=2], got shape {tuple(input_ids.shape)}")
    if labels.shape != input_ids.shape:
        raise ValueError("labels must have the shape of input_ids")
    config = getattr(model, "config", None)
    if config is None:
        return
    lowest = LOWEST_PLACEHOLDER if "pixel_values" in inputs else 0
    if input_ids.numel() and (input_ids.min() < lowest or input_ids.max() >= config.vocab_size):
        raise ValueError(f"token ids must be in [0, {config.vocab_size})")
    scored = labels[labels != -100]
    if scored.numel() and (scored.min() < 0 or scored.max() >= config.vocab_size):
        raise ValueError(f"labels must be -100 or in [0, {config.vocab_size})")
    if input_ids.shape[1] > config.n_positions:
        raise ValueError(f"sequence of {input_ids.shape[1]} tokens exceeds the model's "
                         f"{config.n_positions} positions")


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two equally long vectors.

    Returns 0.0 (no evidence of agreement) when either vector is all zeros or holds a non-finite
    value, so a NaN answer can never pass a ``cosine >= threshold`` check by accident.
    """
    if len(a) != len(b):
        raise ValueError(f"vectors differ in length: {len(a)} != {len(b)}")
    if not all(math.isfinite(x) for x in (*a, *b)):
        return 0.0
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    if norm == 0.0:
        return 0.0
    return max(-1.0, min(1.0, math.fsum(x * y for x, y in zip(a, b)) / norm))


@torch.no_grad()
def mean_loss(model: torch.nn.Module, batches: list) -> float:
    """The mean of ``model``'s loss over ``batches`` in eval mode (no dropout: the same
    parameters give the same loss on every validator), on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    return sum(model(**model_inputs(b, device)).loss.item() for b in batches) / len(batches)


@torch.no_grad()
def set_shifted(params: list[torch.nn.Parameter], base: list[torch.Tensor],
                change: list[torch.Tensor] | None = None) -> None:
    """Set ``params`` to ``base - change`` (to ``base`` when ``change`` is None), casting the
    change to each parameter's device and dtype (updates travel as float32 on the CPU)."""
    for param, start, delta in zip(params, base, change or [None] * len(params)):
        param.copy_(start if delta is None else start - delta.to(param.device, param.dtype))


def update_cosines(vectors: dict[int, torch.Tensor]) -> dict[int, dict[int, float]]:
    """``uid -> {other uid: cosine}`` between every pair of flat updates of one epoch (empty
    for fewer than two); a zero update has cosine 0 with everything."""
    uids = list(vectors)
    if len(uids) < 2:
        return {}
    matrix = torch.stack([v / v.norm().clamp_min(1e-30) for v in vectors.values()])
    similarity = (matrix @ matrix.T).tolist()
    return {uid: {other: similarity[row][col] for col, other in enumerate(uids) if col != row}
            for row, uid in enumerate(uids)}
