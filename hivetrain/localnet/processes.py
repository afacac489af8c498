"""Start, watch and stop the neuron processes of a local swarm.

Each neuron is its own OS process (hivemind starts helper processes of its own, which rules out
``multiprocessing`` children) in its own session, so stopping it also stops its p2pd daemon.
Stopping is graceful first (SIGTERM: the miner checkpoints and leaves the DHT), forceful after a
grace period, and happens on every exit path, Ctrl-C included.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

# How a neuron is started: this interpreter running the installed package.
HIVETRAIN = ("-m", "hivetrain")


class LaunchError(RuntimeError):
    """A neuron died or never came up; the message points at its log file."""


@dataclass
class Neuron:
    name: str
    run_dir: Path
    process: subprocess.Popen

    @property
    def log_path(self) -> Path:
        return self.run_dir / "neuron.log"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


Spawn = Callable[[list[str], Path, dict[str, str]], subprocess.Popen]


def new_interpreter(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """``python <argv>`` in a session of its own, its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)


class ProcessGroup:
    """The neurons of one local swarm; use as a context manager so they always get stopped."""

    def __init__(self, grace_seconds: float = 30.0, spawn: Spawn | None = None):
        """:param spawn: starts ``python <argv>`` with its output appended to a log file and
            returns the process; by default a new interpreter in its own session (the tests
            pass a fork server's, which skips the interpreter's imports)."""
        self.neurons: list[Neuron] = []
        self.grace_seconds = grace_seconds
        self.spawn = spawn or new_interpreter

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def start(self, name: str, run_dir: Path, args: list[str],
              program: tuple[str, ...] = HIVETRAIN) -> Neuron:
        """Start ``python <program> <args>`` with its output in ``run_dir/neuron.log``."""
        run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = self.spawn([*program, *args], run_dir / "neuron.log", env)
        neuron = Neuron(name, run_dir, process)
        self.neurons.append(neuron)
        logger.info("started %s (pid %d), log %s", name, process.pid, neuron.log_path)
        return neuron

    def wait_for_file(self, neuron: Neuron, filename: str, timeout: float) -> dict:
        """Block until ``neuron`` publishes ``filename`` (JSON, written atomically) and return it.

        Fails fast when the process exits first, with the tail of its log.
        """
        path = neuron.run_dir / filename
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return json.loads(path.read_text())
            if not neuron.alive():
                raise LaunchError(f"{neuron.name} exited with code {neuron.process.returncode} "
                                  f"before it was ready; last log lines:\n{neuron.log_tail()}")
            time.sleep(0.2)  # polling a file another process writes; no event to wait on
        raise LaunchError(f"{neuron.name} was not ready after {timeout:.0f} s; see {neuron.log_path}")

    def check_alive(self) -> None:
        for neuron in self.neurons:
            if not neuron.alive():
                raise LaunchError(f"{neuron.name} exited with code {neuron.process.returncode}; "
                                  f"last log lines:\n{neuron.log_tail()}")

    def stop(self, neuron: Neuron, grace_seconds: float | None = None) -> int | None:
        """SIGTERM, wait for a clean exit, then SIGKILL what is left of its session; returns the exit code."""
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        if neuron.alive():
            neuron.process.send_signal(signal.SIGTERM)  # the neuron stops its own helpers
            try:
                neuron.process.wait(grace)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s; killing it", neuron.name, grace)
        _signal_session(neuron.process.pid, signal.SIGKILL)  # leftover helpers (p2pd) too
        neuron.process.wait()
        if neuron in self.neurons:
            self.neurons.remove(neuron)  # stopped on purpose: no longer watched
        return neuron.process.returncode

    def kill_all(self) -> None:
        """SIGKILL every neuron and its helpers at once: an end without the clean stop's final
        checkpoints (seconds per neuron on a busy machine), for runs whose state is not kept."""
        for neuron in list(self.neurons):
            self.kill(neuron)

    def kill(self, neuron: Neuron, helpers: bool = True) -> None:
        """SIGKILL ``neuron`` and its helpers at once, as a crash or power cut would.

        :param helpers: False kills the neuron's own process only, as the OOM killer does, and
            leaves its helpers (p2pd, hivemind's processes) to die with it on their own.
        """
        if helpers:
            _signal_session(neuron.process.pid, signal.SIGKILL)
        else:
            neuron.process.kill()
        neuron.process.wait()
        if neuron in self.neurons:
            self.neurons.remove(neuron)

    def stop_all(self) -> None:
        for neuron in self.neurons:
            if neuron.alive():
                neuron.process.send_signal(signal.SIGTERM)
        for neuron in list(self.neurons):
            self.stop(neuron)


def _signal_session(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
