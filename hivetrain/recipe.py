"""What the swarm trains: tokenizer, data, model and the run_id that fingerprints them.

Miners and validators build the same recipe from the same flags, so a validator's model is the
swarm's model and its run_id is the one the miners average under.
"""

from __future__ import annotations

from dataclasses import dataclass

from hivetrain.config import Config, fingerprint, run_id, swarm_agreement
from hivetrain.data import TokenData, load_token_data, load_tokenizer, tokenizer_digest
from hivetrain.model.gpt2 import build_model, model_fingerprint_facts


@dataclass
class Recipe:
    tokenizer: object
    data: TokenData
    model: object
    run_id: str


def build_recipe(cfg: Config) -> Recipe:
    """Load the tokenizer and data, build the seeded (or pretrained) model, derive the run_id."""
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    data = load_token_data(cfg.data, tokenizer)
    model = build_model(cfg.model.preset, data.vocab_size, cfg.data.seq_len, cfg.neuron.seed,
                        cfg.model.pretrained)
    agreed = {**swarm_agreement(cfg), "model": model_fingerprint_facts(model),
              "tokenizer": tokenizer_digest(tokenizer)}
    return Recipe(tokenizer, data, model, run_id(cfg.model.preset, fingerprint(agreed)))
