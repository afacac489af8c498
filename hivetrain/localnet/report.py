"""The local swarm's live progress lines and its final report (PNG plots + JSON summary)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hivetrain.atomic import atomic_write, atomic_write_text
from hivetrain.telemetry import read_metrics


def latest(records: list[dict], kind: str) -> dict | None:
    return next((r for r in reversed(records) if r.get("kind") == kind), None)


def progress_line(name: str, records: list[dict]) -> str:
    """One line per miner: epoch, loss, held-out loss, peers, samples/s."""
    train = latest(records, "train")
    if train is None:
        return f"{name:<11} starting..."
    return (f"{name:<11} epoch {train['epoch']:>4}  loss {train['loss']:6.3f}  "
            f"held-out {train['heldout_loss']:6.3f}  peers {train['peers']:>2}  "
            f"{train['samples_per_second']:6.1f} samples/s  {train['samples']:>7} samples")


def validator_line(name: str, records: list[dict]) -> str:
    """The validator's last round: each uid's round score and moving average, and the loss
    gain its last checked update made on its assigned and on random data (proof of training)."""
    last = latest(records, "round")
    if last is None:
        return f"{name:<11} waiting for its first round..."
    scores = "  ".join(f"uid{r['uid']} {_score(r['score'])} (ema {r['ema']:.2f}{_gains(r)})"
                       for r in last["results"])
    return f"{name:<11} epoch {last['epoch']:>4}  {scores}"


def _score(score) -> str:
    return "-" if score is None else f"{score:.1f}"


def _gains(result: dict) -> str:
    update = result.get("update") or {}
    assigned, random = update.get("assigned_gain"), update.get("random_gain")
    if assigned is None or random is None or math.isnan(assigned) or math.isnan(random):
        return ""
    return f", gain assigned {assigned:+.2f} random {random:+.2f}"


def chain_incentive(options) -> dict[str, dict]:
    """Per wallet name: uid, incentive and stake as the embedded chain computed them."""
    from hivetrain.chain import Chain, load_wallet

    chain = Chain.open("embedded", chain_path=str(options.chain_path), netuid=1)
    try:
        metagraph = chain.metagraph(refresh=True)
    finally:
        chain.close()
    result = {}
    for wallet_dir in sorted(options.wallet_path.iterdir()):
        hotkey = load_wallet(wallet_dir.name, "default", str(options.wallet_path)).hotkey.ss58_address
        uid = metagraph.uid_of(hotkey)
        if uid is not None:
            result[wallet_dir.name] = {"uid": uid, "incentive": metagraph.incentive[uid],
                                       "stake": metagraph.stake[uid]}
    return result


def summarise(options, names: list[str], duration: float) -> dict:
    """JSON-ready summary: per miner losses, epochs, samples; validator scores; incentive."""
    miners = {}
    vocab_size = 4096
    for name in names:
        records = read_metrics(options.out_dir / name)
        train = [r for r in records if r["kind"] == "train"]
        start = latest(records, "start") or {}
        vocab_size = start.get("vocab_size", vocab_size)
        miners[name] = {
            "uid": start.get("uid"), "peer_id": start.get("peer_id"),
            "first_heldout_loss": train[0]["heldout_loss"] if train else None,
            "last_heldout_loss": train[-1]["heldout_loss"] if train else None,
            "best_heldout_loss": min((r["heldout_loss"] for r in train), default=None),
            "epochs": max((r["epoch"] for r in train), default=0),
            "samples": train[-1]["samples"] if train else 0,
            "max_peers": max((r["peers"] for r in train), default=0),
        }
    validators = {}
    for i in range(1, options.validators + 1):
        rounds = [r for r in read_metrics(options.out_dir / f"validator{i}") if r["kind"] == "round"]
        validators[f"validator{i}"] = {
            "rounds": len(rounds),
            "last_round": {str(r["uid"]): {"score": r["score"], "ema": r["ema"], "reason": r["reason"],
                                           "update": r.get("update")}
                           for r in (rounds[-1]["results"] if rounds else [])},
        }
    return {"duration_seconds": duration, "initial_loss_bound": math.log(vocab_size),
            "miners": miners, "validators": validators, "chain": chain_incentive(options)}


def score_series(rounds: list[dict]) -> dict[int, dict[str, list]]:
    """Per uid, the moving average and each round's own score against seconds since the first
    round. The raw scores are plotted too: the EMA alone hid the rounds a miner scored 1.0.
    Rounds without a score (the miner was not judged) are left out of the raw points."""
    series: dict[int, dict[str, list]] = {}
    for round_ in rounds:
        at = round_["time"] - rounds[0]["time"]
        for result in round_["results"]:
            uid = series.setdefault(result["uid"], {"seconds": [], "ema": [], "round_seconds": [],
                                                    "score": []})
            uid["seconds"].append(at)
            uid["ema"].append(result["ema"])
            if result["score"] is not None:
                uid["round_seconds"].append(at)
                uid["score"].append(result["score"])
    return series


def write_report(options, names: list[str], summary: dict) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.png``: losses per miner, and validator scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(14, 5))
    for index, name in enumerate(names):
        train = [r for r in read_metrics(options.out_dir / name)
                 if r["kind"] == "train" and r["samples"] > 0]
        color = f"C{index}"
        loss_ax.plot([r["samples"] for r in train], [r["loss"] for r in train], color=color,
                     alpha=0.45, label=f"{name} train")
        loss_ax.plot([r["samples"] for r in train], [r["heldout_loss"] for r in train],
                     color=color, marker="o", markersize=3, label=f"{name} held-out")
    loss_ax.axhline(summary["initial_loss_bound"], color="grey", linestyle=":",
                    label="ln(vocab): uniform guess")
    loss_ax.set(xlabel="samples trained by this miner", ylabel="cross-entropy (nats/token)",
                title="miners: train and held-out loss")
    loss_ax.legend(fontsize=8, ncol=2)
    loss_ax.grid(alpha=0.3)
    uid_names = {v["uid"]: k for k, v in summary["chain"].items()}
    for i in range(1, options.validators + 1):
        rounds = [r for r in read_metrics(options.out_dir / f"validator{i}") if r["kind"] == "round"]
        for index, (uid, series) in enumerate(sorted(score_series(rounds).items())):
            incentive = summary["chain"].get(uid_names.get(uid, ""), {}).get("incentive", 0.0)
            color = f"C{index}"
            score_ax.plot(series["seconds"], series["ema"], color=color, marker="o", markersize=3,
                          label=f"uid{uid} {uid_names.get(uid, '')} (incentive {incentive:.2f})")
            score_ax.scatter(series["round_seconds"], series["score"], color=color, marker="x",
                             s=18, alpha=0.6)
    score_ax.set(xlabel="seconds since the first round", ylabel="score",
                 title="validator scores: moving average (lines), each round (x); "
                       "chain incentive in the legend")
    if score_ax.get_legend_handles_labels()[0]:  # a run without validators has no scores
        score_ax.legend(fontsize=8)
    score_ax.grid(alpha=0.3)
    png, report = options.out_dir / "report.png", options.out_dir / "report.json"
    atomic_write(png, lambda handle: fig.savefig(handle, format="png", dpi=100,
                                                 bbox_inches="tight"))
    plt.close(fig)
    atomic_write_text(report, json.dumps(summary, indent=2))
    return png, report
