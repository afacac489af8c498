"""Where a neuron reports what it does: the log, a metrics file, and wandb.

Every metric record goes to ``<run dir>/metrics.jsonl`` (one JSON object per line, appended), which
the local swarm reads for its live progress and report, and to wandb when enabled. Without a
wandb API key the run is recorded offline and the log says how to upload it later.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from hivetrain.config import Config

logger = logging.getLogger("hivetrain")

METRICS_FILE = "metrics.jsonl"


def setup_logging(cfg: Config) -> None:
    """One readable line per event; ``--logging.trace`` also shows hivemind's internals."""
    level = logging.DEBUG if (cfg.logging.debug or cfg.logging.trace) else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, force=True,
                        format=f"%(asctime)s {cfg.role} %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
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
        if self._wandb_run is not None:
            numeric = {f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
            self._wandb_run.log(numeric)

    def close(self) -> None:
        if self._wandb_run is not None:
            offline = self._wandb_run.settings.mode == "offline"
            directory = self._wandb_run.dir
            self._wandb_run.finish()
            if offline:
                logger.info("wandb run saved offline; upload it with: wandb sync %s",
                            Path(directory).parent)


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
