"""The machine a neuron runs on: its run directory, its ports, its device and CPU threads.

The run directory and the ports are checked before anything slow starts (``check_host`` imports
no torch), so a taken port or a read-only disk stops the neuron with one clear line instead of a
failure minutes later; the device and threads are set once torch is loaded (``prepare_host``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hivetrain.atomic import atomic_write_text
from hivetrain.config import Config, ConfigError, check_port_free

if TYPE_CHECKING:
    import torch

WRITE_CHECK_FILE = ".write-check"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA request without a GPU is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--train.device {name} asked for CUDA, but torch sees no GPU; "
                          f"use --train.device cpu or install a CUDA build of torch")
    return device


def check_writable_dir(folder: Path, flag: str) -> Path:
    """Create ``folder`` and prove a file can be written there, or say which flag to change.

    Left unchecked, a read-only or full disk surfaced minutes later: for a neuron as a hivemind
    daemon error (its identity file lives in the run directory) or a lost checkpoint, for an
    export after the whole download.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / WRITE_CHECK_FILE, "hivetrain can write here\n")
        (folder / WRITE_CHECK_FILE).unlink()
    except OSError as error:
        raise ConfigError(not_writable(folder, flag, error)) from None
    return folder


def not_writable(folder: Path, flag: str, error: OSError) -> str:
    """The one line for a folder that cannot be written (also a disk that filled up later)."""
    return (f"{flag} {folder} is not writable ({error.strerror or error}); free disk space, fix "
            f"its permissions or pick another {flag}")


def check_host(cfg: Config, serves_api: bool) -> None:
    """Check the run directory and the ports this neuron will listen on."""
    check_writable_dir(cfg.run_dir, "--neuron.dir")
    check_port_free(cfg.dht.port, "--dht.port")
    if serves_api:
        check_port_free(cfg.axon.port, "--axon.port")


def prepare_host(cfg: Config) -> torch.device:
    """Set the CPU threads and pick the device."""
    import torch

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    return resolve_device(cfg.train.device)
