"""What the robust all-reduce costs a round, measured in one process against hivemind's plain sum.

    .venv/bin/python bench/defence_cost.py --presets tiny gpt2 --senders 3 4 8

The defences add work in two places of a DiLoCo round (:mod:`hivetrain.swarm.robust`): each
reducer combines the copies of its parts with :func:`~hivetrain.swarm.robust.robust_mean`
(median weight, norms, a coordinate-wise median, clipping) instead of summing them as they
stream in, and each receiver checks every averaged part (finite, norm bound). Everything else
(admission, bans, progress bounds, sketches) runs once per round on a handful of numbers.

For each preset and group size this script builds honest-looking copies of the whole
pseudo-gradient (one per sender, cut into the parts hivemind's fp16 all-reduce uses), then times,
in the same process and on the same tensors:

* ``plain``: hivemind's reduction, ``acc.add_(part, alpha=weight)`` per sender, then ``/ sum``;
* ``robust``: :func:`robust_mean` on the same copies, plus the receiver's check of the result.

and one training step of the preset (forward, backward, AdamW; batch 8 x 128, one thread).
Printed: seconds per round of each reduction over the *whole* vector (in a swarm each peer
reduces 1/N of it, in parallel, so this is N x what one peer spends), the extra seconds, and the
extra as a fraction of a round of ``--inner-steps`` training steps measured here. Both sides run
the same tensors on the same thread, so the fraction does not depend on how busy the machine is
as much as a wall-clock swarm comparison does (``bench/low_communication.py``'s
``diloco/fp16+undefended``, where three peers share the cores).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from hivetrain.swarm.robust import RECEIVE_FACTOR, Verdicts, robust_mean

PART_VALUES = 2**19 // 2  # hivemind's 512 KiB parts, in fp16 values (the default compression)
BATCH, SEQ = 8, 128


def honest_copies(numel: int, senders: int, seed: int = 0) -> list[torch.Tensor]:
    """``senders`` pseudo-gradients sharing a common direction plus their own noise (honest
    DiLoCo changes of one round measured cosine 0.5-0.8 with each other)."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(numel, generator=generator)
    return [(common + torch.randn(numel, generator=generator)) * 1e-3 for _ in range(senders)]


def plain_reduce(parts: list[list[torch.Tensor]], weights: list[float]) -> None:
    """hivemind's ``TensorPartReducer``: a running weighted sum per part, then the mean."""
    for copies in parts:
        accumulator = torch.zeros_like(copies[0])
        for tensor, weight in zip(copies, weights):
            accumulator.add_(tensor, alpha=weight)
        accumulator.div_(sum(weights))


def robust_reduce(parts: list[list[torch.Tensor]], weights: list[float]) -> None:
    """The defended reducer and receiver on the same parts."""
    names = [f"peer{i}" for i in range(len(weights))]
    verdicts = Verdicts()
    for copies in parts:
        average = robust_mean({i: (t, w) for i, (t, w) in enumerate(zip(copies, weights))},
                              names, verdicts, reference_rms=1e-3)
        own = copies[0]
        bound = RECEIVE_FACTOR * max(own.norm().item(), 1e-3 * math.sqrt(own.numel()))
        assert torch.isfinite(average).all() and average.norm().item() <= bound
    verdicts.judge_directions()
    assert not verdicts.as_dict().get("offenders"), "honest copies must pass"


def best_of(repeats: int, fn, *args) -> float:
    """The fastest of ``repeats`` runs: what the work costs without the machine's other load."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return min(times)


def step_seconds(preset: str, steps: int) -> tuple[int, float]:
    """Trainable parameters and the best time of one AdamW training step of ``preset``."""
    from hivetrain.config import Config
    from hivetrain.data import load_token_data, load_tokenizer
    from hivetrain.model.gpt2 import build_model

    cfg = Config()
    data = load_token_data(cfg.data, load_tokenizer(None))
    model = build_model(preset, data.vocab_size, SEQ, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = data.train_batches("bench", BATCH, SEQ)

    def step():
        batch = next(batches)
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()

    step()  # allocate the optimizer state outside the timing
    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return numel, best_of(steps, step)


def measure(preset: str, senders: list[int], inner_steps: int, repeats: int, steps: int) -> list:
    numel, step = step_seconds(preset, steps)
    rows = []
    for n in senders:
        copies = honest_copies(numel, n)
        parts = [list(chunks) for chunks in zip(*(c.split(PART_VALUES) for c in copies))]
        weights = [float(8 * inner_steps)] * n
        plain = best_of(repeats, plain_reduce, parts, weights)
        robust = best_of(repeats, robust_reduce, parts, weights)
        round_seconds = inner_steps * step
        rows.append(dict(preset=preset, params=numel, senders=n, parts=len(parts),
                         plain_s=plain, robust_s=robust, extra_s=robust - plain,
                         step_s=step, inner_steps=inner_steps,
                         extra_of_round=(robust - plain) / round_seconds,
                         extra_of_round_per_peer=(robust - plain) / n / round_seconds))
        del copies, parts
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny"])
    parser.add_argument("--senders", nargs="+", type=int, default=[3, 4, 8])
    parser.add_argument("--inner-steps", type=int, default=500,
                        help="training steps per round (the miner's default)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per reduction (best kept)")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed (best kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [row for preset in args.presets
            for row in measure(preset, args.senders, args.inner_steps, args.repeats, args.steps)]
    print(f"{'preset':<6} {'params':>11} {'N':>2} {'parts':>5} {'plain s':>8} {'robust s':>9} "
          f"{'step s':>7} {'extra/round':>11} {'per peer':>9}")
    for r in rows:
        print(f"{r['preset']:<6} {r['params']:>11,} {r['senders']:>2} {r['parts']:>5} "
              f"{r['plain_s']:8.4f} {r['robust_s']:9.4f} {r['step_s']:7.4f} "
              f"{r['extra_of_round']:11.2%} {r['extra_of_round_per_peer']:9.3%}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
