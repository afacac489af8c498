#!/usr/bin/env python3
"""Check that this machine can run a hivetrain neuron, and say how to fix what is missing.

Run it after installing (``make install`` runs it; the auto-updater in scripts/autoupdate.sh runs it after every
update and rolls the update back when it fails)::

    python post_install.py [--require-pm2] [--wallet.path DIR] [--only p2pd,pm2] [--json]

It prints one row per check and, below the table, the fix for each problem. Every check only looks
(the bitsandbytes check runs one optimizer step on a throw-away tensor), so running it again is
harmless. Exit status: 1 when something a neuron cannot run without is missing (a ``FAIL`` row),
else 0; ``WARN`` rows never fail the run.

The locations it checks can be overridden, which is how the tests simulate missing tools:

* ``--p2pd PATH`` or ``HIVETRAIN_P2PD``: the p2pd binary (default: ``hivemind_cli/p2pd`` inside the
  installed hivemind package, where hivemind itself looks for it);
* ``--pm2 PATH`` or ``HIVETRAIN_PM2``: the pm2 executable (default: ``pm2`` on PATH, else this
  checkout's ``node_modules/.bin/pm2``, the same order as scripts/autoupdate.sh);
* ``--wallet.path DIR``: the wallets folder (default ``~/.bittensor/wallets``, as the neurons).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import netrc
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent
OK, WARN, FAIL = "OK", "WARN", "FAIL"
# What `make install` does: the exact pins, then the package itself.
INSTALL = f"pip install -r {REPO / 'requirements.txt'} && pip install --no-deps -e {REPO}"


@dataclass
class Result:
    """One row of the summary: what was checked, how it went, and the fix when it did not."""

    name: str
    status: str
    detail: str
    fix: str = ""


def read_version(path: Path) -> str:
    """``__version__`` from a Python file, without importing it."""
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', path.read_text(), re.M)
    return match.group(1) if match else "unknown"


def dist_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def hivemind_requirement() -> str:
    """``hivemind==X`` as pinned in requirements.txt (else as installed), for the reinstall command."""
    requirements = REPO / "requirements.txt"
    if requirements.exists():
        match = re.search(r"^hivemind\s*==\s*(\S+)", requirements.read_text(), re.M)
        if match:
            return f"hivemind=={match.group(1)}"
    installed = dist_version("hivemind")
    return f"hivemind=={installed}" if installed else "hivemind"


@contextlib.contextmanager
def quiet():
    """Silence the import-time chatter of torch and bitsandbytes so the table stays readable."""
    sink = io.StringIO()
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


# ---------------------------------------------------------------------------------------------
# Checks. Each takes the parsed arguments and returns a Result.
# ---------------------------------------------------------------------------------------------


def check_python(args) -> Result:
    return Result("python", OK, f"{platform.python_version()} ({sys.executable})")


def check_hivemind(args) -> Result:
    version = dist_version("hivemind")
    if version is None or importlib.util.find_spec("hivemind") is None:
        return Result("hivemind", FAIL, "not installed", INSTALL)
    return Result("hivemind", OK, version)


def default_p2pd() -> Optional[Path]:
    """Where hivemind looks for its daemon: ``hivemind/hivemind_cli/p2pd`` in the package."""
    spec = importlib.util.find_spec("hivemind")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "hivemind_cli" / "p2pd"


def check_p2pd(args) -> Result:
    reinstall = f"pip install --force-reinstall --no-deps {hivemind_requirement()}"
    override = args.p2pd or os.environ.get("HIVETRAIN_P2PD")
    path = Path(override) if override else default_p2pd()
    if path is None:
        return Result("p2pd", FAIL, "hivemind is not installed, so neither is its p2pd", reinstall)
    if not path.is_file():
        return Result("p2pd", FAIL, f"missing: {path}", reinstall)
    if not os.access(path, os.X_OK):
        return Result("p2pd", FAIL, f"not executable: {path}", f"chmod +x {path}   (or: {reinstall})")
    try:
        # Go's flag package prints the usage for -h; a binary for another CPU or libc fails here.
        run = subprocess.run([str(path), "-h"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Result("p2pd", FAIL, f"{path} does not run: {error}", reinstall)
    if "Usage" not in run.stdout + run.stderr:
        return Result("p2pd", FAIL, f"{path} -h exited {run.returncode} without its usage text", reinstall)
    return Result("p2pd", OK, f"runs: {path}")


def check_torch(args) -> Result:
    try:
        with quiet():
            import torch
    except Exception as error:  # noqa: BLE001 (any import failure means the same thing here)
        return Result("torch", FAIL, f"cannot import torch: {error}", INSTALL)
    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        device = f"cuda x{torch.cuda.device_count()} ({', '.join(names)})"
        bf16 = "bf16 supported" if torch.cuda.is_bf16_supported() else "no bf16 on this GPU (fp16/fp32 only)"
    else:
        device = "cpu only (no CUDA device visible)"
        try:
            x = torch.ones(4, 4, dtype=torch.bfloat16)
            bf16 = "bf16 works on CPU" if float((x @ x).sum()) == 64.0 else "bf16 on CPU gives wrong results"
        except RuntimeError as error:
            bf16 = f"no bf16 on CPU ({error})"
    return Result("torch", OK, f"{torch.__version__}; {device}; {bf16}")


def check_bitsandbytes(args) -> Result:
    fix = f"{INSTALL}   (reinstalls the pinned bitsandbytes), or train with --train.optimizer adamw"
    try:
        with quiet():
            import bitsandbytes as bnb
            import torch
    except Exception as error:  # noqa: BLE001
        return Result("bitsandbytes", WARN, f"cannot import: {error}", fix)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    done = []
    for device in devices:
        try:
            with quiet():
                param = torch.nn.Parameter(torch.randn(64, 64, device=device))
                # min_8bit_size=0: keep the state 8-bit even for this tiny tensor.
                optimizer = bnb.optim.AdamW8bit([param], lr=1e-3, min_8bit_size=0)
                before = param.detach().clone()
                param.grad = torch.randn_like(param)
                optimizer.step()
                state = optimizer.state[param]["state1"]
            if state.dtype != torch.uint8 or torch.equal(before, param.detach()):
                raise RuntimeError(f"state dtype {state.dtype}, parameter changed: "
                                   f"{not torch.equal(before, param.detach())}")
        except Exception as error:  # noqa: BLE001
            return Result("bitsandbytes", WARN, f"{bnb.__version__}; 8-bit AdamW step on {device} failed: "
                                                f"{error}".strip(), fix)
        done.append(device)
    return Result("bitsandbytes", OK, f"{bnb.__version__}; 8-bit AdamW step works on {', '.join(done)}")


def find_pm2(args) -> tuple[Optional[Path], str]:
    """The pm2 to use and where it was looked for (same order as scripts/autoupdate.sh)."""
    override = args.pm2 or os.environ.get("HIVETRAIN_PM2")
    if override:
        found = shutil.which(override)
        return (Path(found) if found else None), override
    on_path = shutil.which("pm2")
    if on_path:
        return Path(on_path), "PATH"
    local = REPO / "node_modules" / ".bin" / "pm2"
    return (local if os.access(local, os.X_OK) else None), f"PATH and {local}"


def pm2_version(path: Path) -> str:
    """pm2's version from its package.json: running ``pm2 --version`` would start its daemon."""
    for folder in Path(os.path.realpath(path)).parents:
        package = folder / "package.json"
        if package.is_file():
            try:
                data = json.loads(package.read_text())
            except ValueError:
                continue
            if data.get("name") == "pm2":
                return data.get("version", "unknown version")
    return "unknown version"


def check_pm2(args) -> Result:
    level = FAIL if args.require_pm2 else WARN
    fix = f"npm install -g pm2   (needs Node.js; or `npm ci` in {REPO} for the pinned copy in node_modules/.bin)"
    path, where = find_pm2(args)
    if path is None:
        return Result("pm2", level, f"not found ({where}); needed by run_miner.sh / run_validator.sh", fix)
    if shutil.which("node") is None:
        return Result("pm2", level, f"{path} found but node is not on PATH",
                      "install Node.js (https://nodejs.org or your package manager)")
    return Result("pm2", OK, f"{pm2_version(path)}: {path}")


def check_wandb(args) -> Result:
    fix = "wandb login   (or run the neurons with --wandb.off, or WANDB_MODE=offline)"
    if importlib.util.find_spec("wandb") is None:
        return Result("wandb", WARN, "not installed", f"{INSTALL}   (or run with --wandb.off)")
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return Result("wandb", OK, f"WANDB_MODE={mode}: runs are kept locally")
    if os.environ.get("WANDB_API_KEY"):
        return Result("wandb", OK, "logged in (WANDB_API_KEY)")
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc")).expanduser()
    if path.is_file():
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError) as error:
            return Result("wandb", WARN, f"cannot read {path}: {error}", fix)
        if entry and entry[2]:
            return Result("wandb", OK, f"logged in ({host} in {path})")
    return Result("wandb", WARN, f"not logged in (no WANDB_API_KEY, no {host} entry in {path}); "
                                 "neurons will record runs offline", fix)


def check_wallet_path(args) -> Result:
    path = Path(args.wallet_path).expanduser()
    fix = f"give your user write access to {path}, or pass --wallet.path to a folder you own"
    if path.exists():
        if not path.is_dir():
            return Result("wallet", WARN, f"{path} exists but is not a folder", fix)
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".hivetrain-write-test-"):
                pass
        except OSError as error:
            return Result("wallet", WARN, f"{path} is not writable: {error.strerror}", fix)
        wallets = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not wallets:
            return Result("wallet", OK, f"{path} writable; no wallets yet",
                          f"btcli wallet create --wallet NAME --wallet-hotkey HOTKEY --wallet-path {path}")
        return Result("wallet", OK, f"{path} writable; wallets: {', '.join(wallets)}")
    parent = next(p for p in path.parents if p.exists())
    if os.access(parent, os.W_OK):
        return Result("wallet", OK, f"{path} does not exist yet; btcli will create it")
    return Result("wallet", WARN, f"{path} does not exist and {parent} is not writable", fix)


CHECKS: dict[str, Callable] = {
    "python": check_python, "hivemind": check_hivemind, "p2pd": check_p2pd, "torch": check_torch,
    "bitsandbytes": check_bitsandbytes, "pm2": check_pm2, "wandb": check_wandb,
    "wallet": check_wallet_path,
}


def render(results: list, version: str) -> str:
    """The human-readable table, the fixes, and a one-line verdict."""
    rows = [("check", "status", "details"), ("-----", "------", "-------")]
    rows += [(r.name, r.status, r.detail) for r in results]
    width = max(len(row[0]) for row in rows)
    lines = [f"hivetrain {version} post-install checks", ""]
    lines += [f"  {name:<{width}}  {status:<6}  {detail}" for name, status, detail in rows]
    fixes = [r for r in results if r.fix and r.status != OK]
    notes = [r for r in results if r.fix and r.status == OK]
    if fixes:
        lines += ["", "To fix:"] + [f"  {r.name} ({r.status}): {r.fix}" for r in fixes]
    if notes:
        lines += ["", "Next steps:"] + [f"  {r.name}: {r.fix}" for r in notes]
    failed = sum(r.status == FAIL for r in results)
    warned = sum(r.status == WARN for r in results)
    lines.append("")
    if failed:
        lines.append(f"NOT READY: {failed} problem(s) a neuron cannot run with, {warned} warning(s)")
    else:
        lines.append(f"READY: nothing a neuron needs is missing ({warned} warning(s))")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--require-pm2", action="store_true",
                        help="Fail (not just warn) when pm2 is missing, e.g. before using run_miner.sh.")
    parser.add_argument("--wallet.path", dest="wallet_path", default="~/.bittensor/wallets",
                        help="Wallets folder to check (default: ~/.bittensor/wallets).")
    parser.add_argument("--p2pd", help="p2pd binary to check (env HIVETRAIN_P2PD; default: the one "
                                       "inside the installed hivemind).")
    parser.add_argument("--pm2", help="pm2 executable to check (env HIVETRAIN_PM2; default: PATH, "
                                      "then node_modules/.bin/pm2).")
    parser.add_argument("--only", help=f"Comma-separated subset of: {', '.join(CHECKS)}.")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args(argv)
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(CHECKS))
        if unknown:
            parser.error(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    selected = args.only.split(",") if args.only else list(CHECKS)
    results = [CHECKS[name](args) for name in CHECKS if name in selected]
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(render(results, read_version(REPO / "hivetrain" / "__init__.py")))
    return 1 if any(r.status == FAIL for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
