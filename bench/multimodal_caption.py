"""Figures for the multimodal GPT-2: sizes per preset and mode, speed, and learning on shapes.

    .venv/bin/python bench/multimodal_caption.py [--seconds 120] [--projection-seconds 60]

Single process, one CPU thread. Prints parameter counts (total, trainable per mode) and the fp32
bytes of trainable parameters (what a swarm averages per round), the resampler's output shape,
the forward+backward time of a batch, then trains mm-tiny in ``full`` mode on the embedded
shapes captions and reports held-out caption loss and how often greedy captions of held-out
images name the right shape, colour and position, against chance. Finally it re-initialises the
adapters of the trained model and trains them alone (``projection`` mode), which shows that mode
learns once the frozen encoder and GPT-2 carry something useful.
"""

from __future__ import annotations

import argparse
import time

import torch

from hivetrain.data import load_tokenizer
from hivetrain.data.captions import shapes_data
from hivetrain.export import caption_accuracy
from hivetrain.model.multimodal import (MM_PRESETS, MultimodalGPT2, build_multimodal_model,
                                        multimodal_config)

BATCH, SEQ_LEN = 16, 32


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def sizes(vocabs: dict[str, int]) -> None:
    print("preset               vocab   total      trainable(full)  trainable(projection)  "
          "trainable fp32 MB full / projection")
    for name, vocab in vocabs.items():
        # Counted from config on the meta device: no weights, no network.
        with torch.device("meta"):
            model = MultimodalGPT2(multimodal_config(name, vocab, MM_PRESETS[name].n_latents + 3))
        total, full = sum(p.numel() for p in model.parameters()), trainable(model)
        model.set_mode("projection")
        adapters = trainable(model)
        print(f"{name:20} {vocab:5d} {total / 1e6:8.2f}M  {full / 1e6:14.2f}M  {adapters / 1e6:20.3f}M  "
              f"{full * 4 / 2**20:10.1f} / {adapters * 4 / 2**20:.2f}")


@torch.no_grad()
def heldout_loss(model, batches) -> float:
    model.eval()
    loss = sum(model(**batch).loss.item() for batch in batches) / len(batches)
    model.train()
    return loss


def train(model, data, seconds: float, label: str, heldout) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    batches = data.train_batches(label, BATCH, SEQ_LEN)
    model.train()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        loss = model(**next(batches)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        if steps % 200 == 0:
            print(f"  {label} step {steps:5d}  {time.perf_counter() - start:5.0f}s  train loss "
                  f"{loss.item():.3f}  held-out {heldout_loss(model, heldout):.3f}")
    print(f"  {label}: {steps} steps of {BATCH} in {seconds:.0f}s")


def report(model, data, heldout, when: str) -> None:
    model.eval()
    acc = caption_accuracy(model, data, n_images=256)
    rate, chance = acc["rate"], acc["chance"]
    print(f"{when}: held-out caption loss {heldout_loss(model, heldout):.3f}; right shape "
          f"{rate['shape']:.0%} (chance {chance['shape']:.0%}), colour {rate['colour']:.0%} "
          f"({chance['colour']:.0%}), position {rate['position']:.0%} ({chance['position']:.0%})")
    for truth, said in acc["examples"][:4]:
        print(f"    {truth!r:40} -> {said!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--projection-seconds", type=float, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = load_tokenizer()
    # The GPU preset's pretrained GPT-2 needs GPT-2's own 50257-token vocabulary.
    sizes({"mm-tiny": len(tokenizer), "mm-clip-gpt2-medium": 50257})

    model = build_multimodal_model("mm-tiny", len(tokenizer), SEQ_LEN, seed=0)
    data = shapes_data(tokenizer, model.config.n_latents)
    batch = next(data.train_batches("bench", 8, SEQ_LEN))
    with torch.no_grad():
        features = model.vision(pixel_values=torch.zeros(8, 3, 32, 32)).last_hidden_state
        print(f"mm-tiny: encoder features {tuple(features.shape)} -> resampler "
              f"{tuple(model.resampler(features).shape)} -> projection "
              f"{tuple(model.encode_images(batch['pixel_values']).shape)}")
    start = time.perf_counter()
    for _ in range(20):
        model(**batch).loss.backward()
    print(f"mm-tiny forward+backward, batch 8 x {SEQ_LEN}: "
          f"{(time.perf_counter() - start) / 20 * 1000:.0f} ms")
    model.zero_grad(set_to_none=True)

    heldout = data.heldout_batches(8, BATCH, SEQ_LEN)
    report(model, data, heldout, "before training")
    train(model, data, args.seconds, "full", heldout)
    report(model, data, heldout, "after full-mode training")

    if args.projection_seconds > 0:
        fresh = build_multimodal_model("mm-tiny", len(tokenizer), SEQ_LEN, seed=1)
        for part in ("resampler", "projection"):
            setattr(model, part, getattr(fresh, part))
        model.image_markers = fresh.image_markers
        model.set_mode("projection")
        report(model, data, heldout, "adapters re-initialised, encoder and GPT-2 kept")
        train(model, data, args.projection_seconds, "projection", heldout)
        report(model, data, heldout, "after projection-mode training")


if __name__ == "__main__":
    main()
