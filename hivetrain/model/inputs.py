"""Model inputs as every part of hivetrain passes them: a dict of tensors for ``model(**inputs)``.

Text data yields ``[batch, seq]`` token tensors, trained as their own labels; image-caption data
(:mod:`hivetrain.data.captions`) yields dicts that already hold ``labels`` and uint8
``pixel_values``. :func:`model_inputs` turns either into the model's keyword arguments, so the
trainer, the probe and the validator treat both model families alike; :func:`request_fields` and
:func:`request_inputs` carry the same dict over the probe protocol and back, pixels as base64.
"""

from __future__ import annotations

import base64

import numpy as np
import torch

from hivetrain.protocol import ImagePayload, ProbeRequest

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


def request_fields(batch: torch.Tensor | Inputs) -> dict:
    """The ProbeRequest fields that carry ``batch`` (labels only when they are not the ids)."""
    inputs = model_inputs(batch)
    fields = {"input_ids": inputs["input_ids"].tolist()}
    if not torch.equal(inputs["labels"], inputs["input_ids"]):
        fields["labels"] = inputs["labels"].tolist()
    if "pixel_values" in inputs:
        pixels = inputs["pixel_values"].to(torch.uint8).contiguous().numpy()
        fields["pixel_values"] = ImagePayload(shape=list(pixels.shape),
                                              data=base64.b64encode(pixels.tobytes()).decode())
    return fields


def request_inputs(request: ProbeRequest, device: torch.device | str | None = None) -> Inputs:
    """The model inputs a probe request describes (the inverse of :func:`request_fields`)."""
    inputs = {"input_ids": torch.tensor(request.input_ids, dtype=torch.long)}
    if request.labels is not None:
        inputs["labels"] = torch.tensor(request.labels, dtype=torch.long)
    if request.pixel_values is not None:
        raw = np.frombuffer(base64.b64decode(request.pixel_values.data), dtype=np.uint8)
        inputs["pixel_values"] = torch.from_numpy(raw.reshape(request.pixel_values.shape).copy())
    return model_inputs(inputs, device)
