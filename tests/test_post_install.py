"""post_install.py: each check on its own, with the tools it looks for present or missing.

The checks are run as a user runs them, ``python post_install.py ...`` in a subprocess, with the
locations they look at overridden by the flags and environment variables the script documents.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PM2 = ROOT / "node_modules" / ".bin" / "pm2"


def post_install(*args, env_extra=None, timeout=120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIVETRAIN_", "WANDB_"))}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(ROOT / "post_install.py"), *map(str, args)], cwd=ROOT,
                          env=env, text=True, capture_output=True, timeout=timeout)


def rows(result) -> dict:
    """name -> result dict from a ``--json`` run."""
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_missing_p2pd_fails_with_the_reinstall_command(tmp_path):
    result = post_install("--only", "p2pd", "--p2pd", tmp_path / "p2pd")
    assert result.returncode == 1
    assert "p2pd" in result.stdout and "FAIL" in result.stdout and "missing" in result.stdout
    assert "pip install --force-reinstall --no-deps hivemind==" in result.stdout
    assert "NOT READY" in result.stdout


def test_p2pd_location_can_come_from_the_environment(tmp_path):
    not_executable = tmp_path / "p2pd"
    not_executable.write_text("#!/bin/sh\n")
    result = post_install("--only", "p2pd", "--json", env_extra={"HIVETRAIN_P2PD": str(not_executable)})
    assert result.returncode == 1
    assert rows(result)["p2pd"]["status"] == "FAIL"
    assert "not executable" in rows(result)["p2pd"]["detail"]


def test_missing_pm2_is_a_warning_unless_required(tmp_path):
    missing = tmp_path / "bin" / "pm2"
    warned = post_install("--only", "pm2", "--pm2", missing)
    assert warned.returncode == 0
    assert "WARN" in warned.stdout and "npm install -g pm2" in warned.stdout
    required = post_install("--only", "pm2", "--require-pm2", "--json", env_extra={"HIVETRAIN_PM2": str(missing)})
    assert required.returncode == 1
    row = rows(required)["pm2"]
    assert row["status"] == "FAIL" and "npm install -g pm2" in row["fix"]


def test_wandb_login_is_detected(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    netrc.chmod(0o600)
    home = {"HOME": str(tmp_path), "NETRC": str(tmp_path / "absent")}
    assert rows(post_install("--only", "wandb", "--json", env_extra=home))["wandb"]["status"] == "WARN"
    assert rows(post_install("--only", "wandb", "--json", env_extra={**home, "NETRC": str(netrc)}))["wandb"]["status"] == "OK"
    assert rows(post_install("--only", "wandb", "--json", env_extra={**home, "WANDB_API_KEY": "k"}))["wandb"]["status"] == "OK"
    assert rows(post_install("--only", "wandb", "--json", env_extra={**home, "WANDB_MODE": "offline"}))["wandb"]["status"] == "OK"


def test_unknown_check_is_rejected():
    result = post_install("--only", "p2pd,gpu")
    assert result.returncode == 2 and "unknown check(s) gpu" in result.stderr


def test_passes_here_when_everything_is_present(tmp_path):
    """On a set-up machine (the project's venv, pm2 from `npm ci`) every check that matters passes."""
    if not PM2.exists():
        pytest.skip("pm2 not installed in node_modules: run `npm ci`")
    wallets = tmp_path / "wallets"
    (wallets / "alice" / "hotkeys").mkdir(parents=True)
    result = post_install("--require-pm2", "--pm2", PM2, "--wallet.path", wallets)
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    assert "READY" in result.stdout and "FAIL" not in result.stdout
    again = rows(post_install("--require-pm2", "--pm2", PM2, "--wallet.path", wallets, "--json"))
    for name in ("python", "hivemind", "p2pd", "torch", "bitsandbytes", "pm2", "wallet"):
        assert again[name]["status"] == "OK", again[name]
    assert "8-bit AdamW step works on cpu" in again["bitsandbytes"]["detail"]
    assert "wallets: alice" in again["wallet"]["detail"]
    assert list(wallets.iterdir()) == [wallets / "alice"]  # the write test left nothing behind
