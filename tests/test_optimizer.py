"""The state a joining peer downloads must keep AdamW's statistics exact."""

import pytest
import torch
from hivemind.compression import CompressionInfo, TensorRole, deserialize_torch_tensor

from hivetrain.swarm.optimizer import load_state_compression


def roundtrip(compression, tensor, role):
    info = CompressionInfo.from_tensor(tensor, key=0, role=role)
    return deserialize_torch_tensor(compression.compress(tensor, info))


@pytest.mark.parametrize("name", ["none", "fp16", "int8"])
def test_optimizer_statistics_download_exactly(name):
    # A typical AdamW second moment after the first steps: far below fp16's smallest subnormal.
    exp_avg_sq = torch.full((64,), 6e-10) * torch.linspace(0.1, 10.0, 64)
    assert torch.equal(roundtrip(load_state_compression(name), exp_avg_sq, TensorRole.OPTIMIZER),
                       exp_avg_sq)


def test_parameters_still_use_the_configured_compression():
    params = torch.linspace(-0.1, 0.1, 64)
    loaded = roundtrip(load_state_compression("fp16"), params, TensorRole.PARAMETER)
    assert torch.equal(loaded, params.half().float())
