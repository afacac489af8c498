"""A fork server for the process tests' neurons: one interpreter per pytest worker imports torch,
transformers, hivemind and bittensor once, then forks each neuron a test starts.

Why: a neuron spends ~5 s of CPU importing those before it does anything, and a process test
starts three to seven of them at once on this 2-core machine, beside the other worker's swarm.
A forked neuron is still its own OS process in its own session, with its own log, environment,
working directory and argv, running the same ``main`` as ``python -m hivetrain`` (or the same
helper script); only the interpreter start and the imports are skipped. Starting from a fresh
interpreter keeps its own tests: ``make demo``'s neurons (test_localnet), pm2's (test_stop,
test_autoupdate), the start-up checks (test_startup_errors) and the CLI (test_status,
test_docs).

    python tests/helpers/zygote.py        (stdin: one JSON request per line; stdout: pids)

A request is ``{"argv": [...], "cwd": ..., "env": {...}, "log": path, "stderr": path,
"status": path}``, where argv is what would follow ``python``: ``-m hivetrain ...`` or
``script.py ...``. The server answers with the child's pid, and writes the child's exit code to
``status`` once it has reaped it (``-N`` for signal N, as :class:`subprocess.Popen` does). It
exits when its stdin closes.
"""

from __future__ import annotations

import itertools
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

# What a neuron, a CLI or a test helper imports at start-up (torch, transformers, hivemind and
# bittensor come with these); a child finds them imported.
PRELOAD = ("hivetrain.cli", "hivetrain.miner.neuron", "hivetrain.validator.neuron")
REAP_SECONDS = 0.02  # how often the server looks for children that exited


class ForkedProcess:
    """A neuron forked by the server, with the parts of :class:`subprocess.Popen`'s interface
    that :class:`hivetrain.localnet.processes.ProcessGroup` uses.

    The server, not this process, is the neuron's parent, so its exit code comes from the status
    file the server writes when it reaps it."""

    def __init__(self, args: list[str], pid: int, status: Path):
        self.args, self.pid, self._status = args, pid, status
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._status.exists():
            self.returncode = int(self._status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(REAP_SECONDS)  # the server writes the status file; no event to wait on
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # a reaped pid may already belong to another process
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The client side: starts the server and asks it for neurons."""

    def __init__(self, status_dir: Path):
        self._status_dir = status_dir
        self._count = itertools.count()
        self._server = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env={**os.environ,
                                                                     "PYTHONUNBUFFERED": "1"})

    def spawn(self, argv: list[str], log: Path, env: dict[str, str],
              stderr: Path | None = None) -> ForkedProcess:
        """Fork ``python <argv>`` with stdout and stderr appended to ``log`` (the signature of
        ``ProcessGroup``'s ``spawn``), or stderr to ``stderr`` when given."""
        if self._server.poll() is not None:
            raise RuntimeError(f"the fork server exited with code {self._server.returncode}")
        status = self._status_dir / f"{next(self._count)}.exit"
        request = {"argv": argv, "cwd": os.getcwd(), "env": env, "log": str(log),
                   "stderr": str(stderr or log), "status": str(status)}
        self._server.stdin.write(json.dumps(request).encode() + b"\n")
        self._server.stdin.flush()
        answer = self._server.stdout.readline()
        if not answer:
            raise RuntimeError(f"the fork server exited with code {self._server.wait()}")
        pid = int(answer)
        return ForkedProcess([sys.executable, *argv], pid, status)

    def run(self, commands: list[list[str]], timeout: float) -> list[subprocess.CompletedProcess]:
        """``subprocess.run(["python", *argv], capture_output=True, text=True)`` for each argv of
        ``commands``, all forked at once: the commands a test runs against its subnet
        (``hivetrain status``, ``export``). Their results, in order."""
        started = []
        for argv in commands:
            index = next(self._count)
            out, err = (self._status_dir / f"{index}.{name}" for name in ("stdout", "stderr"))
            started.append((self.spawn(argv, out, {**os.environ}, stderr=err), out, err))
        deadline = time.monotonic() + timeout
        try:
            for process, _, _ in started:
                process.wait(max(0.0, deadline - time.monotonic()))
        finally:
            for process, _, _ in started:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return [subprocess.CompletedProcess(process.args, process.returncode, out.read_text(),
                                            err.read_text()) for process, out, err in started]

    def close(self) -> None:
        """Ask the server to exit, and kill it if it has not within 30 s: in one loaded fresh
        clone's run it had not, and the session's last teardown failed on the wait."""
        self._server.stdin.close()
        try:
            self._server.wait(30)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()


def _serve() -> dict:
    """Answer requests until stdin closes (then exit); returns only in a forked child, with the
    request it is to run."""
    statuses: dict[int, str] = {}
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], REAP_SECONDS)
        if readable:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    return request
                statuses[pid] = request["status"]
                os.write(1, f"{pid}\n".encode())
        for pid in list(statuses):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                path = statuses.pop(pid)
                Path(path + ".tmp").write_text(str(os.waitstatus_to_exitcode(status)))
                os.replace(path + ".tmp", path)  # the client reads it whole or not at all
    sys.exit(0)  # children still running belong to their tests' process groups


def _own_locks() -> None:
    """Give this child its own copies of the process-shared locks hivemind makes at import.

    They are multiprocessing semaphores (``MPFuture``'s, ``SharedBytes``' and the async context
    executor's). Forked from one server, every neuron of a worker would share them, where each
    fresh interpreter has its own. One neuron SIGKILLed while it held one (subnet fixtures end
    with SIGKILL) would then hang the others the next time they take it, at their DHT's start
    for instance. Once, a forked miner logged "bootstrapping" and then nothing for 180 s before
    this reset was added."""
    import multiprocessing

    from hivemind.utils.asyncio import _AsyncContextWrapper
    from hivemind.utils.mpfuture import MPFuture

    MPFuture.reset_backend()  # hivemind's own reset of the first three
    _AsyncContextWrapper.EXECUTOR_LOCK = multiprocessing.Lock()


def _become(request: dict) -> None:
    """In the forked child: take the neuron's session, files, environment and argv, and run it
    as ``python`` would run it as ``__main__``."""
    os.setsid()
    _own_locks()
    for fd, path in ((1, request["log"]), (2, request["stderr"])):
        file = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(file, fd)
        os.close(file)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv = request["argv"]
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    _become(_serve())
