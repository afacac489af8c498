"""GPT-2 presets and a seeded, byte-identical initialisation that every peer reproduces.

A swarm only averages meaningfully if every peer starts from the same weights. Rather than ship
weights, each peer builds the model on the CPU in float32 under the run seed, which torch makes
bit-exact for a given version (the torch pin is part of the install). The vocabulary size comes
from the tokenizer, rounded up to a multiple of 64 for faster matmuls, so any preset works with
the shipped 4k-token BPE or GPT-2's own 50k vocabulary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel


@dataclass(frozen=True)
class Preset:
    """Architecture of one preset; everything else (vocab, positions) comes from the data."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int = 1024


PRESETS: dict[str, Preset] = {
    "tiny": Preset(n_layer=4, n_embd=128, n_head=4, n_positions=512),
    "gpt2": Preset(n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium": Preset(n_layer=24, n_embd=1024, n_head=16),
    # The seed subnet's run: gpt2-large width, 31 layers, 2048 positions: 677.0M parameters with
    # GPT-2's vocabulary (padded to 50304).
    "gpt2-677m": Preset(n_layer=31, n_embd=1280, n_head=20, n_positions=2048),
    "gpt2-large": Preset(n_layer=36, n_embd=1280, n_head=20),
}


def padded_vocab_size(tokenizer_vocab: int) -> int:
    return (tokenizer_vocab + 63) // 64 * 64


def gpt2_config(preset: str, vocab_size: int, seq_len: int) -> GPT2Config:
    """The transformers config of ``preset`` for a tokenizer of ``vocab_size`` tokens.

    :param seq_len: training sequence length; must fit the preset's position table.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    arch = PRESETS[preset]
    if seq_len > arch.n_positions:
        raise ValueError(f"--data.seq_len {seq_len} exceeds the {preset} preset's "
                         f"{arch.n_positions} positions")
    return GPT2Config(vocab_size=padded_vocab_size(vocab_size), n_positions=arch.n_positions,
                      n_embd=arch.n_embd, n_layer=arch.n_layer, n_head=arch.n_head,
                      bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)


def build_model(preset: str, vocab_size: int, seq_len: int, seed: int,
                pretrained: str | None = None) -> GPT2LMHeadModel:
    """Build the swarm model on the CPU in float32: seeded init, or a transformers checkpoint.

    :param pretrained: hub name or local folder; its own config then decides the architecture.
    """
    if pretrained:
        return AutoModelForCausalLM.from_pretrained(pretrained, dtype=torch.float32)
    config = gpt2_config(preset, vocab_size, seq_len)
    # Fork the RNG so seeding here never disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model


def model_fingerprint_facts(model: GPT2LMHeadModel) -> dict:
    """The parts of the model config that peers must share, for the run_id fingerprint."""
    cfg = model.config
    return {"arch": cfg.model_type, "vocab_size": cfg.vocab_size, "n_positions": cfg.n_positions,
            "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
            "tie_word_embeddings": cfg.tie_word_embeddings}


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once), as model cards report them."""
    return sum(p.numel() for p in model.parameters())


def param_digest(model: torch.nn.Module) -> str:
    """Short sha256 over every parameter's bytes in name order: equal digests, equal models."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def param_sketch(model: torch.nn.Module, n_values: int = 64) -> list[float]:
    """``n_values`` parameters at fixed pseudo-random positions, for comparing peers' models.

    hivemind's all-reduce hands each peer ``local + (average - local)``, which rounds differently
    on each peer, so swarm models agree to float precision rather than bit for bit; comparing
    sketches with a tolerance tells "the same model" from "a different model" where digests can't.
    """
    flat = torch.cat([p.detach().reshape(-1).to("cpu", torch.float32)
                      for _, p in sorted(model.named_parameters())])
    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(0, flat.numel(), (n_values,), generator=generator)
    return flat[positions].tolist()
