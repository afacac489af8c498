"""The local swarm's live progress lines and its final report (PNG plot + JSON summary)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from hivetrain.telemetry import read_metrics


def latest(records: list[dict], kind: str) -> dict | None:
    return next((r for r in reversed(records) if r.get("kind") == kind), None)


def progress_line(name: str, records: list[dict]) -> str:
    """One line per miner: epoch, loss, held-out loss, peers, samples/s."""
    train = latest(records, "train")
    if train is None:
        return f"{name:<9} starting..."
    return (f"{name:<9} epoch {train['epoch']:>4}  loss {train['loss']:6.3f}  "
            f"held-out {train['heldout_loss']:6.3f}  peers {train['peers']:>2}  "
            f"{train['samples_per_second']:6.1f} samples/s  {train['samples']:>7} samples")


def summarise(run_dirs: dict[str, Path], vocab_size: int, duration: float) -> dict:
    """JSON-ready summary: per miner start/end held-out loss, epochs, samples and digests."""
    miners = {}
    for name, run_dir in run_dirs.items():
        records = read_metrics(run_dir)
        train = [r for r in records if r["kind"] == "train"]
        epochs = [r for r in records if r["kind"] == "epoch"]
        start = latest(records, "start") or {}
        miners[name] = {
            "peer_id": start.get("peer_id"),
            "first_heldout_loss": train[0]["heldout_loss"] if train else None,
            "last_heldout_loss": train[-1]["heldout_loss"] if train else None,
            "best_heldout_loss": min((r["heldout_loss"] for r in train), default=None),
            "epochs": epochs[-1]["epoch"] if epochs else 0,
            "samples": train[-1]["samples"] if train else 0,
            "last_digest": epochs[-1]["digest"] if epochs else None,
            "max_peers": max((r["peers"] for r in train), default=0),
        }
    return {"duration_seconds": duration, "initial_loss_bound": math.log(vocab_size),
            "miners": miners}


def write_report(out_dir: Path, run_dirs: dict[str, Path], summary: dict) -> tuple[Path, Path]:
    """Write ``report.json`` and ``loss.png`` (train and held-out loss against samples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for index, (name, run_dir) in enumerate(run_dirs.items()):
        train = [r for r in read_metrics(run_dir) if r["kind"] == "train" and r["samples"] > 0]
        color = f"C{index}"
        ax.plot([r["samples"] for r in train], [r["loss"] for r in train], color=color,
                alpha=0.45, label=f"{name} train")
        ax.plot([r["samples"] for r in train], [r["heldout_loss"] for r in train], color=color,
                marker="o", markersize=3, label=f"{name} held-out")
    ax.axhline(summary["initial_loss_bound"], color="grey", linestyle=":",
               label="ln(vocab): uniform guess")
    ax.set_xlabel("samples trained by this miner")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title("hivetrain local swarm")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    png = out_dir / "loss.png"
    fig.savefig(png.with_suffix(".tmp.png"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(png.with_suffix(".tmp.png"), png)
    report = out_dir / "report.json"
    report.with_suffix(".tmp").write_text(json.dumps(summary, indent=2))
    os.replace(report.with_suffix(".tmp"), report)
    return png, report
