"""Where a neuron reports what it does: the log, a metrics file, and wandb.

Every metric record goes to ``<run dir>/metrics.jsonl`` (one JSON object per line, appended), which
the local swarm reads for its live progress and report, and to wandb when enabled. Without a
wandb API key the run is recorded offline and the log says how to upload it later.

wandb talks to its own service process, which a stop under pm2 kills together with the neuron
(pm2 signals the whole process tree): its calls then raise (``ConnectionResetError``,
``MailboxClosedError``) or block. So every wandb call runs on a daemon thread with a deadline,
and a failure is one warning line, after which wandb is dropped and metrics.jsonl carries on:
telemetry never stops a neuron from checkpointing or exiting.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from hivetrain.config import Config

logger = logging.getLogger("hivetrain")

METRICS_FILE = "metrics.jsonl"
WANDB_LOG_TIMEOUT_S = 5.0
WANDB_CLOSE_TIMEOUT_S = 20.0  # finish() flushes the run; offline that is a local file


def setup_logging(cfg: Config) -> None:
    """One readable line per event; ``--logging.trace`` also shows hivemind's internals.

    Info and debug lines go to stdout, warnings and errors to stderr: pm2 (and any log shipper)
    treats stderr as the error log, which showed every progress line as an error.
    """
    level = logging.DEBUG if (cfg.logging.debug or cfg.logging.trace) else logging.INFO
    formatter = logging.Formatter(f"%(asctime)s {cfg.role} %(levelname)s %(name)s: %(message)s",
                                  datefmt="%H:%M:%S")
    progress = logging.StreamHandler(sys.stdout)
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    for handler in (progress, problems):
        handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[progress, problems], force=True)
    os.environ.setdefault("HIVEMIND_LOGLEVEL", "DEBUG" if cfg.logging.trace else "WARNING")
    for noisy in ("hivemind", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if cfg.logging.trace else logging.WARNING)


class Telemetry:
    """Metrics sink for one neuron: appends JSON lines and mirrors them to wandb.

    :param run_name: wandb run name, ``{role}-uid{uid}-{hotkey[:8]}`` or a local equivalent.
    :param group: wandb group; the swarm's run_id, so one swarm's peers chart together.
    """

    def __init__(self, cfg: Config, run_name: str, group: str):
        self.path = cfg.run_dir / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wandb_run = None if cfg.wandb.off else _start_wandb(cfg, run_name, group)

    def log(self, kind: str, **values) -> None:
        record = {"kind": kind, "time": time.time(), **values}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        run = self._wandb_run
        if run is not None:
            numeric = {f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
            if not bounded(lambda: run.log(numeric), WANDB_LOG_TIMEOUT_S, "wandb log"):
                self._drop_wandb()

    def close(self) -> None:
        """Finish the wandb run (bounded); metrics.jsonl needs no closing."""
        run = self._wandb_run
        if run is not None:
            offline, directory = run.settings.mode == "offline", run.dir
            if self._drop_wandb() and offline:
                logger.info("wandb run saved offline; upload it with: wandb sync %s",
                            Path(directory).parent)

    def _drop_wandb(self) -> bool:
        """Finish the run and shut the service connection down, each step bounded; True when
        both worked. Never raises, and wandb is not used again either way.

        The teardown is tried even when finish failed: it unregisters wandb's exit hook, which
        would otherwise wait on the dead service again (or print its traceback) at exit.
        """
        import wandb

        run, self._wandb_run = self._wandb_run, None
        finished = bounded(run.finish, WANDB_CLOSE_TIMEOUT_S, "wandb finish")
        return bounded(wandb.teardown, WANDB_CLOSE_TIMEOUT_S, "wandb teardown") and finished


def bounded(call: Callable[[], object], timeout_s: float, what: str) -> bool:
    """Run ``call`` on a daemon thread for at most ``timeout_s``; True when it returned in time.

    A failure or an overrun is logged as one warning line, never raised: the thread of a call
    that hangs is abandoned (daemon threads do not hold up the process's exit).
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # SystemExit included: wandb's teardown may raise it
            failure.append(error)

    thread = threading.Thread(target=run, daemon=True, name=what)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        logger.warning("%s did not return within %.0f s; going on without wandb", what, timeout_s)
        return False
    if failure:
        logger.warning("%s failed (%s: %s); going on without wandb, metrics.jsonl has every "
                       "record", what, type(failure[0]).__name__, failure[0])
        return False
    return True


def _start_wandb(cfg: Config, run_name: str, group: str):
    import wandb  # imported only when enabled: it is slow to import

    has_key = bool(os.environ.get("WANDB_API_KEY")) or _netrc_has_wandb()
    mode = os.environ.get("WANDB_MODE") or ("online" if has_key else "offline")
    return wandb.init(project=cfg.wandb.project or f"hivetrain-netuid{cfg.netuid}",
                      entity=cfg.wandb.entity, name=run_name, group=group, mode=mode,
                      dir=str(cfg.run_dir), config=cfg.to_dict(), reinit="finish_previous",
                      settings=wandb.Settings(silent=True, console="off"))


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def read_metrics(run_dir: Path) -> list[dict]:
    """All records a neuron wrote so far; a half-written last line is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
