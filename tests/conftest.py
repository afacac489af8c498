"""Test-session house rules: every process a test starts ends with the session.

Process tests start real neurons, and each neuron starts its own helpers (hivemind's p2pd daemon
and averager processes). A test that fails half-way, or a neuron killed with SIGKILL, can leave
those helpers running, holding ports and CPU for the rest of the session and for the next one.
hivemind's own ``conftest.py`` kills its children at the end of the session; here every process
started under pytest inherits a marker in its environment, so the sweep finds helpers even after
their parent died and they were re-parented to init (which a walk of the process tree would miss).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

MARKER = "HIVETRAIN_TEST_SESSION"
# One marker per pytest process: `make test` runs pytest-xdist workers (TEST_WORKERS), which
# inherit the controller's environment, and each must sweep only what its own tests started.
os.environ[MARKER] = uuid.uuid4().hex
# One CPU thread per test process and its children (the neurons already take --train.threads 1).
# Two workers share two cores: with torch's default of a thread per core, OpenMP threads spun
# against each other, and an in-process test (test_contribution, 3 s alone) took 290 s beside a
# subnet in the first two-worker run.
os.environ["OMP_NUM_THREADS"] = "1"
SESSION_START = time.time()

# Modules that run subnets of real processes for a minute or more, longest first (per-module
# seconds: docs/benchmarks.md, "The test suite's time"). Workers take whole modules in collection
# order (Makefile: --dist loadfile --no-loadscope-reorder), so with two workers these start first
# and the short modules fill the gaps beside them; collected alphabetically, the two longest came
# last and ran alone.
LONGEST_FIRST = ("test_validator", "test_swarm", "test_localnet", "test_proof_of_training",
                 "test_robust_averaging", "test_startup_errors", "test_autoupdate",
                 "test_multimodal_swarm", "test_consistency_swarm", "test_diloco", "test_dodger",
                 "test_restart", "test_stop")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.module.__name__.rpartition(".")[2]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: tests keep their order within a module


def _marked(marker: str) -> dict[int, int]:
    """Pid -> parent pid of every process whose environment carries ``MARKER=marker``."""
    needle = f"{MARKER}={marker}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):  # gone, or not ours
            continue
        if needle in environ.split(b"\0"):
            found[int(entry.name)] = parent
    return found


def marked_processes(marker: str) -> list[int]:
    """Pids whose environment carries ``MARKER=marker``, except this process and its direct
    children: those are multiprocessing helpers (hivemind's DHT and averagers) that Python ends
    itself at exit, and killing them first breaks the pipes it still talks to them through."""
    return [pid for pid, parent in _marked(marker).items() if parent != os.getpid()]


def detached_processes(marker: str) -> list[int]:
    """Marked pids that no longer descend from this process: daemons (pm2) and the helpers of a
    neuron that died, re-parented to init. Within a session only a test's leftovers are."""
    parents = _marked(marker)

    def ours(pid: int) -> bool:
        seen = set()
        while pid in parents and pid not in seen:
            seen.add(pid)
            pid = parents[pid]
        return pid == os.getpid()

    return [pid for pid in parents if not ours(pid)]


def _kill(pid: int) -> bool:
    """SIGKILL ``pid``; False when it is already gone or not ours to kill."""
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


@pytest.fixture(scope="session", autouse=True)
def end_every_child_process():
    """After the last test, SIGKILL whatever the session's processes left behind."""
    yield
    if not Path("/proc").is_dir():
        return
    for pid in marked_processes(os.environ[MARKER]):
        _kill(pid)


@pytest.fixture(scope="module", autouse=True)
def end_what_a_module_left(request):
    """After each test module, SIGKILL the detached processes it left (a pm2 daemon, a dead
    neuron's helpers), and say which: left running, they take CPU from every later process
    test, whose swarms then step slower than their assertions were measured at."""
    yield
    if not Path("/proc").is_dir():
        return
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    for pid in detached_processes(os.environ[MARKER]):
        command = _command(pid)
        if _kill(pid) and terminal is not None:
            terminal.write_line(f"\n{request.module.__name__} left pid {pid} running "
                                f"({command}): killed")
    release_shared_memory()


def release_shared_memory(shm: Path = Path("/dev/shm")) -> list[Path]:
    """Unlink the shared-memory tensors that this session's dead processes left; the ones
    unlinked.

    hivemind shares tensors between a neuron and its averager through files that torch names
    ``torch_<creator pid>_...`` and its ``torch_shm_manager`` unlinks once their users are gone.
    A subnet ended with SIGKILL (``ProcessGroup.kill_all``) ends that manager too, and the files
    stay, holding RAM until a reboot: 114,964 of them, 10.6 GB of this 24 GB machine's memory,
    after a day of test runs here. Only files written since this session started, whose
    creator is dead and that no live process maps or holds open, are unlinked: torch unlinks
    a file itself when the last tensor on it is freed, and a file gone by then aborts that
    process (``could not unlink the shared memory file``; a test worker's forked DHT died so
    in a fresh clone's run, its neighbours failing to bootstrap from it)."""
    released = []
    in_use = None
    for path in shm.glob("torch_*_*"):
        creator = path.name.split("_")[1]
        try:
            if (creator.isdigit() and not Path(f"/proc/{creator}").exists()
                    and path.stat().st_mtime >= SESSION_START):
                in_use = held_files(shm) if in_use is None else in_use
                if path.name in in_use:
                    continue
                path.unlink()
                released.append(path)
        except FileNotFoundError:  # unlinked by its manager meanwhile
            continue
    return released


def held_files(folder: Path) -> set[str]:
    """Names of the files in ``folder`` that a live process maps or has open."""
    prefix, held = f"{folder}/", set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            held.update(line.rpartition(prefix)[2].split(" ")[0]
                        for line in (proc / "maps").read_text().splitlines() if prefix in line)
            held.update(os.readlink(fd)[len(prefix):] for fd in (proc / "fd").iterdir()
                        if os.readlink(fd).startswith(prefix))
        except OSError:  # gone, or not ours to read
            continue
    return held


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    """This worker's fork server for neurons (tests/helpers/zygote.py): the process tests'
    ``ProcessGroup(spawn=zygote.spawn)`` neurons skip the ~5 s of imports a new interpreter
    spends."""
    from helpers.zygote import Zygote

    server = Zygote(tmp_path_factory.mktemp("zygote"))
    yield server
    server.close()
