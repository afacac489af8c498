"""The tensor codec of the probe: model inputs to ``ProbeRequest`` fields and back.

A probe batch is whatever :func:`hivetrain.model.inputs.model_inputs` gives: token ids, labels
when they are not the ids (image-caption data) and uint8 images. On the wire ids and labels are
JSON lists and images base64 (exact, about 1.3 x raw), so miner and validator rebuild the very
tensors the validator drew.
"""

from __future__ import annotations

import base64

import numpy as np
import torch

from hivetrain.model.inputs import Inputs, model_inputs
from hivetrain.probe.schemas import ImagePayload, ProbeRequest


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
