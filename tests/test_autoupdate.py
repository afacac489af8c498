"""The auto-updater (run_miner.sh -> scripts/autoupdate.sh) against a real git upstream and real pm2.

Each test builds a throw-away world under tmp: a bare repository as upstream, a ``dev`` clone that
publishes versions to it, and a ``node`` clone where the updater runs, holding copies of the real
launcher scripts, a fake neuron (tests/helpers/fake_neuron.py as neurons/miner.py) and a fake
post_install.py that records its runs. pm2 is the pinned one from the project's node_modules
(``npm ci``), with its own PM2_HOME per test, killed at the end. ``HIVETRAIN_INSTALL_CMD`` replaces
``pip install -e .`` by a line appended to install.log. Nothing waits for a fixed time: every wait
polls a condition until a deadline.
"""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from helpers.polling import wait_until
from helpers.ports import unused_port

ROOT = Path(__file__).resolve().parents[1]
PM2 = ROOT / "node_modules" / ".bin" / "pm2"
LAUNCHER_FILES = ["run_miner.sh", "run_validator.sh", "scripts/autoupdate.sh"]

FAKE_POST_INSTALL = '''"""Test stand-in for post_install.py: records the version it ran for{broken_doc}."""
import os, pathlib, re, sys
repo = pathlib.Path(__file__).resolve().parent
version = re.search(r'__version__ = "([^"]+)"', (repo / "hivetrain" / "__init__.py").read_text()).group(1)
with open(os.path.join(os.environ["HIVETRAIN_TEST_MARKERS"], "post_install.log"), "a") as log:
    log.write(version + "\\n")
{broken_code}
'''

BROKEN_NEURON = 'import sys\nprint("this version cannot start", flush=True)\nsys.exit(3)\n'
# The real hivetrain command line (from this checkout, via PYTHONPATH), as neurons/miner.py runs it.
HIVETRAIN_NEURON = 'import sys\nfrom hivetrain.cli import run_role\nsys.exit(run_role("miner"))\n'


@pytest.fixture(scope="session")
def pm2_bin() -> Path:
    """The pinned pm2 from package.json, installed into node_modules when it is not there yet."""
    if not PM2.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("pm2 is not installed and npm is missing: install Node.js, then run `npm ci`")
        command = "ci" if (ROOT / "package-lock.json").exists() else "install"
        subprocess.run([npm, command, "--no-audit", "--no-fund"], cwd=ROOT, check=True, timeout=300)
    return PM2


class World:
    """Upstream, a developer clone and the deployed checkout, plus an isolated pm2."""

    def __init__(self, tmp: Path, pm2: Path, version: str):
        self.tmp = tmp
        self.upstream, self.dev, self.node = tmp / "upstream.git", tmp / "dev", tmp / "node"
        self.markers = tmp / "markers"
        self.markers.mkdir()
        # Short path: pm2 puts unix sockets in PM2_HOME, and socket paths are limited to 108 bytes.
        self.pm2_home = Path(tempfile.mkdtemp(prefix="pm2-", dir="/tmp"))
        self.pm2_bin = pm2
        self.port = unused_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HIVETRAIN_", "PM2_", "GIT_")) and k not in ("name", "pm_id")}
        env.update({
            "PM2_HOME": str(self.pm2_home),
            "HIVETRAIN_PM2": str(pm2),
            "HIVETRAIN_PYTHON": sys.executable,
            "HIVETRAIN_INSTALL_CMD": f'git rev-parse --short HEAD >> "{self.markers}/install.log"',
            "HIVETRAIN_TEST_MARKERS": str(self.markers),
            "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
        })
        self.env = env

        self.git("init", "--quiet", "--bare", "--initial-branch=main", str(self.upstream), cwd=tmp)
        self.git("init", "--quiet", "--initial-branch=main", str(self.dev), cwd=tmp)
        self.git("remote", "add", "origin", str(self.upstream), cwd=self.dev)
        for name in LAUNCHER_FILES:
            target = self.dev / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        (self.dev / "neurons").mkdir()
        self.publish(version, message="initial")
        self.git("clone", "--quiet", str(self.upstream), str(self.node), cwd=tmp)

    # --- plumbing -------------------------------------------------------------------------------

    def git(self, *args, cwd: Path) -> str:
        return subprocess.run(["git", *args], cwd=cwd, env=self.env, check=True, text=True,
                              capture_output=True, timeout=60).stdout.strip()

    def pm2(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.pm2_bin), *map(str, args)], env=self.env, text=True,
                              capture_output=True, timeout=120)

    def pm2_apps(self) -> dict:
        """name -> (status, pid) of every process in this world's pm2."""
        out = self.pm2("jlist").stdout
        apps = json.loads(out[out.index("["):])
        return {app["name"]: (app["pm2_env"]["status"], app["pid"]) for app in apps}

    def close(self):
        # Printed output only shows when a test fails: then the pm2 logs are what explains it.
        for log in sorted((self.pm2_home / "logs").glob("*.log")):
            print(f"==> {log.name}\n{log.read_text()[-4000:]}")
        self.pm2("kill")
        shutil.rmtree(self.pm2_home, ignore_errors=True)

    # --- the story ------------------------------------------------------------------------------

    def publish(self, version: str, *, broken: str = "", message: str = "") -> str:
        """Commit ``version`` in the dev clone and push it upstream; returns the commit.

        :param broken: "" for a working version, "neuron" for a neuron that exits at once,
            "post_install" for a post_install.py that fails, "hivetrain" for the real hivetrain
            miner (which the tests start with flags it refuses).
        """
        (self.dev / "hivetrain").mkdir(exist_ok=True)
        (self.dev / "hivetrain" / "__init__.py").write_text(f'__version__ = "{version}"\n')
        neuron = {"neuron": BROKEN_NEURON, "hivetrain": HIVETRAIN_NEURON}.get(broken) or \
            (ROOT / "tests" / "helpers" / "fake_neuron.py").read_text()
        (self.dev / "neurons" / "miner.py").write_text(neuron)
        (self.dev / "post_install.py").write_text(FAKE_POST_INSTALL.format(
            broken_doc=", then fails" if broken == "post_install" else "",
            broken_code='sys.exit("post_install: something the new version needs is missing")'
            if broken == "post_install" else ""))
        self.git("add", "-A", cwd=self.dev)
        self.git("commit", "--quiet", "--allow-empty", "-m", message or f"release {version}", cwd=self.dev)
        self.git("push", "--quiet", "origin", "main", cwd=self.dev)
        return self.git("rev-parse", "HEAD", cwd=self.dev)

    def updater_once(self, *flags, env=None, timeout: float = 120) -> subprocess.CompletedProcess:
        """One check by the deployed checkout's run_miner.sh, as an operator would run it."""
        command = ["bash", str(self.node / "run_miner.sh"), "--autoupdate.once",
                   "--autoupdate.health_stable", "1", "--autoupdate.health_timeout", "30",
                   "--netuid", "7", "--axon.port", str(self.port), *flags]
        result = subprocess.run(command, env={**self.env, **(env or {})}, text=True,
                                capture_output=True, timeout=timeout)
        print(result.stdout, result.stderr, sep="\n")
        return result

    def status(self):
        """The neuron's /v1/status, or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/status", timeout=2) as r:
                return json.load(r)
        except OSError:
            return None

    def wait_version(self, version: str, timeout: float = 60) -> dict:
        return wait_until(lambda: (s := self.status()) and s["version"] == version and s,
                          timeout, f"the neuron to serve version {version}")

    def head(self) -> str:
        return self.git("rev-parse", "HEAD", cwd=self.node)

    def lines(self, name: str) -> list:
        path = self.markers / name
        return path.read_text().split() if path.exists() else []


@pytest.fixture
def world_factory(tmp_path, pm2_bin):
    worlds = []

    def make(version: str = "0.1.0") -> World:
        folder = tmp_path / f"world{len(worlds)}"
        folder.mkdir()
        worlds.append(World(folder, pm2_bin, version))
        return worlds[-1]

    yield make
    for world in worlds:
        world.close()


@pytest.fixture
def world(tmp_path, pm2_bin):
    w = World(tmp_path, pm2_bin, "0.1.0")
    yield w
    w.close()


def test_newer_version_is_pulled_reinstalled_and_restarted_under_pm2(world):
    """The real set-up: the updater as a pm2 process polling upstream, the neuron beside it."""
    start = world.pm2("start", world.node / "run_miner.sh", "--name", "m1", "--",
                      "--netuid", "7", "--axon.port", world.port, "--wallet.name", "my wallet",
                      "--autoupdate.interval", "1", "--autoupdate.health_stable", "1")
    assert start.returncode == 0, start.stderr
    first = world.wait_version("0.1.0")
    # Neuron flags reach the neuron untouched; --autoupdate.* flags do not.
    assert first["args"] == ["--netuid", "7", "--axon.port", str(world.port), "--wallet.name", "my wallet"]
    assert set(world.pm2_apps()) == {"m1", "m1-neuron"}

    new_commit = world.publish("0.2.0")
    second = world.wait_version("0.2.0", timeout=90)
    assert second["pid"] != first["pid"] and second["args"] == first["args"]
    assert world.head() == new_commit
    assert world.lines("install.log") == [new_commit[:7]]
    assert world.lines("post_install.log") == ["0.2.0"]

    # The updater re-executed itself from the new code and left the fresh neuron running.
    log = world.pm2_home / "logs" / "m1-out.log"
    wait_until(lambda: log.read_text().count("leaving it running") == 1, 30,
               "the re-executed updater to find the neuron up")
    assert "restarting the updater from the new code" in log.read_text()
    assert world.status()["pid"] == second["pid"]
    assert world.pm2_apps()["m1"][0] == "online"


def test_versions_compare_as_semantic_versions(world_factory):
    """0.10.0 is newer than 0.9.0 (a string comparison would say otherwise)."""
    world = world_factory("0.9.0")
    new_commit = world.publish("0.10.0")
    result = world.updater_once()
    assert result.returncode == 0
    assert "updated to 0.10.0" in result.stdout
    assert world.head() == new_commit
    assert world.wait_version("0.10.0")["args"][:2] == ["--netuid", "7"]
    assert world.lines("install.log") == [new_commit[:7]]


def test_older_or_equal_version_is_ignored(world):
    first = world.updater_once()
    assert first.returncode == 0, first.stderr
    assert "up to date: 0.1.0" in first.stdout
    pid = world.wait_version("0.1.0")["pid"]
    head = world.head()
    for version in ("0.1.0", "0.0.9", "0.1.0-rc.1"):
        world.publish(version)
        result = world.updater_once()
        assert result.returncode == 0, result.stderr
        assert f"has {version}, not newer than local 0.1.0" in result.stdout
        assert world.head() == head
    assert world.lines("install.log") == [] and world.lines("post_install.log") == []
    assert world.status()["pid"] == pid  # the running neuron was left alone throughout


@pytest.mark.parametrize("local_change", ["modified", "staged", "local_commit", "untracked_in_the_way"])
def test_local_work_is_never_touched(world, local_change):
    """Local edits, staged changes, local commits and untracked files survive a newer upstream."""
    world.publish("0.2.0")
    neuron = world.node / "neurons" / "miner.py"
    if local_change in ("modified", "staged"):
        neuron.write_text(neuron.read_text() + "# operator's tweak\n")
        if local_change == "staged":
            world.git("add", "neurons/miner.py", cwd=world.node)
    elif local_change == "local_commit":
        (world.node / "NOTES").write_text("local\n")
        world.git("add", "NOTES", cwd=world.node)
        world.git("commit", "--quiet", "-m", "operator's own commit", cwd=world.node)
    else:  # upstream adds a file that exists here untracked: git must refuse, we must not force
        (world.dev / "NOTES").write_text("upstream\n")
        world.publish("0.3.0")
        (world.node / "NOTES").write_text("operator's untracked file\n")
    head = world.head()
    files_before = {p: p.read_bytes() for p in world.node.rglob("*") if p.is_file() and ".git" not in p.parts}
    status_before = world.git("status", "--porcelain", cwd=world.node)

    result = world.updater_once()

    assert result.returncode == 0, result.stderr
    expected = {"modified": "has local changes", "staged": "has local changes",
                "local_commit": "not a fast-forward", "untracked_in_the_way": "the fast-forward failed"}
    assert expected[local_change] in result.stdout
    assert world.head() == head
    assert world.git("status", "--porcelain", cwd=world.node) == status_before
    files_after = {p: p.read_bytes() for p in world.node.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert files_after == files_before
    assert world.lines("install.log") == []


@pytest.mark.parametrize("broken", ["neuron", "post_install"])
def test_broken_new_version_is_rolled_back(world, broken):
    assert world.updater_once().returncode == 0
    old_head, old_pid = world.head(), world.wait_version("0.1.0")["pid"]
    bad_commit = world.publish("0.2.0", broken=broken)

    result = world.updater_once()

    assert result.returncode != 0
    assert "ROLLBACK" in result.stdout and "rolled back to" in result.stdout
    assert world.head() == old_head
    assert world.git("status", "--porcelain", cwd=world.node) == ""
    back = world.wait_version("0.1.0")
    assert back["pid"] != old_pid  # restarted on the old code after the reinstall
    # Installed the new version, then reinstalled the old one.
    assert world.lines("install.log") == [bad_commit[:7], old_head[:7]]
    state = world.node / ".git" / "hivetrain-autoupdate" / "rejected"
    assert state.read_text().strip() == bad_commit

    # The same bad commit is not tried again ...
    again = world.updater_once()
    assert again.returncode == 0 and "was rolled back before" in again.stdout
    assert world.lines("install.log") == [bad_commit[:7], old_head[:7]]
    # ... but a fixed release is.
    fixed = world.publish("0.2.1")
    assert world.updater_once().returncode == 0
    assert world.head() == fixed
    world.wait_version("0.2.1")


def test_off_starts_the_neuron_and_never_updates(world):
    """--autoupdate.off only launches; changed neuron flags restart the neuron, same flags do not."""
    world.publish("0.2.0")
    result = world.updater_once("--autoupdate.off", "--wallet.hotkey", "h1")
    assert result.returncode == 0 and "auto-update is off" in result.stdout
    first = world.wait_version("0.1.0")
    assert first["args"][-2:] == ["--wallet.hotkey", "h1"]
    assert world.updater_once("--autoupdate.off", "--wallet.hotkey", "h1").returncode == 0
    assert world.status()["pid"] == first["pid"]
    assert world.updater_once("--autoupdate.off", "--wallet.hotkey", "h2").returncode == 0
    second = wait_until(lambda: (s := world.status()) and s["args"][-1] == "h2" and s, 30,
                        "the neuron to run with the new flags")
    assert second["pid"] != first["pid"] and second["version"] == "0.1.0"
    assert world.lines("install.log") == []


def test_configuration_error_stops_the_neuron_and_is_reported(world):
    """Issue 14: `--model.preset gpt3` restarted 8 times in 60 s while pm2 showed "online"."""
    world.publish("0.1.1", broken="hivetrain")
    world.git("pull", "--quiet", cwd=world.node)
    result = world.updater_once("--autoupdate.off", "--model.preset", "gpt3")
    assert result.returncode == 0  # the updater stays up, to install the release that fixes it
    assert "stopped on a configuration error (exit code 2)" in result.stdout
    assert "invalid choice: 'gpt3'" in result.stdout  # the neuron's own one-line error
    out = world.pm2("jlist").stdout
    neuron = next(app for app in json.loads(out[out.index("["):]) if app["name"].endswith("-neuron"))
    env = neuron["pm2_env"]
    assert (env["status"], env["restart_time"], env["exit_code"]) == ("stopped", 0, 2)


def test_neuron_follows_a_checkout_moved_by_another_updater(world):
    """A miner and a validator may share a checkout: whoever did not pull still restarts its neuron."""
    # --autoupdate.remote: this updater follows a remote that never changes, so only the other
    # updater (played by the test's `git pull`) moves the shared checkout.
    world.git("clone", "--quiet", "--bare", str(world.upstream), str(world.tmp / "frozen.git"), cwd=world.tmp)
    world.git("remote", "add", "frozen", str(world.tmp / "frozen.git"), cwd=world.node)
    start = world.pm2("start", world.node / "run_miner.sh", "--name", "v1", "--",
                      "--axon.port", world.port, "--autoupdate.interval", "1",
                      "--autoupdate.health_stable", "1", "--autoupdate.remote", "frozen")
    assert start.returncode == 0, start.stderr
    world.wait_version("0.1.0")
    new_commit = world.publish("0.2.0")
    world.git("pull", "--quiet", "--ff-only", cwd=world.node)

    assert world.wait_version("0.2.0")
    log = world.pm2_home / "logs" / "v1-out.log"
    wait_until(lambda: "outside this updater" in log.read_text(), 30, "the updater's log line")
    assert world.head() == new_commit
    assert world.lines("install.log") == []  # installing was the other updater's job


def test_an_interrupted_update_is_finished_on_the_next_start(world):
    """The updater killed during the reinstall: the next start installs and verifies that commit."""
    assert world.updater_once().returncode == 0
    new_commit = world.publish("0.2.0")
    killed = world.updater_once(env={"HIVETRAIN_INSTALL_CMD": "kill -9 $PPID"})
    assert killed.returncode == -9 or killed.returncode == 137
    assert world.head() == new_commit and world.lines("install.log") == []

    result = world.updater_once()
    assert result.returncode == 0
    assert "was interrupted; finishing it" in result.stdout
    assert world.lines("install.log") == [new_commit[:7]]
    assert world.lines("post_install.log") == ["0.2.0"]
    assert world.wait_version("0.2.0")
    assert not (world.node / ".git" / "hivetrain-autoupdate" / "updating").exists()


def test_one_update_at_a_time(world):
    """While another updater holds the checkout's lock, a check does nothing."""
    new_commit = world.publish("0.2.0")
    lock_dir = world.node / ".git" / "hivetrain-autoupdate"
    lock_dir.mkdir()
    with open(lock_dir / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = world.updater_once()
        assert result.returncode == 0
        assert "another update of this checkout is in progress" in result.stdout
        assert world.lines("install.log") == []
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert world.head() != new_commit
    assert world.updater_once().returncode == 0
    assert world.head() == new_commit


def test_missing_pm2_is_reported_with_the_fix(tmp_path):
    """Without pm2 anywhere the launcher stops at once and says how to install it."""
    bare_path = "/usr/bin:/bin"
    if shutil.which("pm2", path=bare_path):
        pytest.skip("pm2 is installed system-wide here")
    checkout = tmp_path / "checkout"
    for name in LAUNCHER_FILES:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, checkout / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVETRAIN_")}
    env.update(PATH=bare_path, HIVETRAIN_PYTHON=sys.executable)
    result = subprocess.run(["bash", str(checkout / "run_validator.sh"), "--autoupdate.once"],
                            env=env, text=True, capture_output=True, timeout=30)
    assert result.returncode != 0
    assert "pm2 not found" in result.stderr and "npm install -g pm2" in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--autoupdate.interval", "0"], "--autoupdate.interval must be a positive whole number"),
    (["--autoupdate.interval=soon"], "--autoupdate.interval must be a positive whole number"),
    (["--autoupdate.remote"], "--autoupdate.remote needs a value"),
    (["--autoupdate.bogus", "1"], "unknown flag --autoupdate.bogus"),
])
def test_bad_autoupdate_flags_are_rejected(flags, message):
    result = subprocess.run(["bash", str(ROOT / "run_miner.sh"), *flags], text=True,
                            capture_output=True, timeout=30)
    assert result.returncode != 0 and message in result.stderr
