"""The machine a neuron runs on: its run directory, its ports, its device and CPU threads.

Checked before anything slow starts, so a taken port or a missing GPU stops the neuron with one
clear line instead of a failure minutes later.
"""

from __future__ import annotations

import torch

from hivetrain.config import Config, ConfigError, check_port_free


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA request without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--train.device {name} asked for CUDA, but torch sees no GPU; "
                          f"use --train.device cpu or install a CUDA build of torch")
    return device


def prepare_host(cfg: Config, serves_api: bool) -> torch.device:
    """Create the run directory, check the ports, pick the device and set the CPU threads."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    check_port_free(cfg.dht.port, "--dht.port")
    if serves_api:
        check_port_free(cfg.axon.port, "--axon.port")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    return resolve_device(cfg.train.device)
