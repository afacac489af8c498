"""Model inputs as every part of hivetrain passes them: a dict of tensors for ``model(**inputs)``.

Text data yields ``[batch, seq]`` token tensors, trained as their own labels; image-caption data
(:mod:`hivetrain.data.captions`) yields dicts that already hold ``labels`` and uint8
``pixel_values``. :func:`model_inputs` turns either into the model's keyword arguments, so the
trainer, the probe and the validator treat both model families alike
(:mod:`hivetrain.probe.codec` carries the same dict over the wire).
"""

from __future__ import annotations

import torch

Inputs = dict[str, torch.Tensor]


def model_inputs(batch: torch.Tensor | Inputs, device: torch.device | str | None = None) -> Inputs:
    """``{"input_ids", "labels"[, "pixel_values"]}`` on ``device`` for a text tensor or a dict."""
    inputs = {"input_ids": batch, "labels": batch} if isinstance(batch, torch.Tensor) else dict(batch)
    inputs.setdefault("labels", inputs["input_ids"])
    if device is not None:
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    return inputs


def rows(inputs: Inputs) -> int:
    """Samples in the batch (sequences; one image-caption pair is one sample)."""
    return inputs["input_ids"].shape[0]
