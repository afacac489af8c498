"""What the swarm trains: tokenizer, data, model and the run_id that fingerprints them.

Miners and validators build the same recipe from the same flags, so a validator's model is the
swarm's model and its run_id is the one the miners average under. The run_id fingerprints the
data too (its digest): peers whose data differ, whatever their flags, are different runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from hivetrain.config import Config, fingerprint, run_id, swarm_agreement
from hivetrain.data import TokenData, load_token_data, load_tokenizer, tokenizer_digest
from hivetrain.data.captions import ImageCaptionData, load_image_caption_data
from hivetrain.model.gpt2 import build_model, model_fingerprint_facts
from hivetrain.model.multimodal import (MM_PRESETS, build_multimodal_model,
                                        multimodal_fingerprint_facts)


@dataclass
class Recipe:
    tokenizer: object
    data: TokenData | ImageCaptionData
    model: object
    run_id: str


def build_recipe(cfg: Config) -> Recipe:
    """Load the tokenizer and data, build the seeded (or pretrained) model, derive the run_id."""
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    if cfg.model.preset in MM_PRESETS:
        model, data = _multimodal(cfg, tokenizer)
        facts = multimodal_fingerprint_facts(model)
    else:
        data = load_token_data(cfg.data, tokenizer)
        model = build_model(cfg.model.preset, data.vocab_size, cfg.data.seq_len, cfg.neuron.seed,
                            cfg.model.pretrained)
        facts = model_fingerprint_facts(model)
    agreed = {**swarm_agreement(cfg), "model": facts, "tokenizer": tokenizer_digest(tokenizer),
              "data": data.digest}
    return Recipe(tokenizer, data, model, run_id(cfg.model.preset, fingerprint(agreed)))


def _multimodal(cfg: Config, tokenizer):
    """A multimodal model and its image-caption data (embedded shapes unless told otherwise)."""
    model = build_multimodal_model(cfg.model.preset, len(tokenizer), cfg.data.seq_len,
                                   cfg.neuron.seed, mode=cfg.model.trainable,
                                   pretrained=cfg.model.pretrained)
    source = cfg.data.files or ("shapes" if cfg.data.dataset == "embedded" else cfg.data.dataset)
    data = load_image_caption_data(source, tokenizer, model.config.n_latents,
                                   image_size=model.config.image_size,
                                   image_column=cfg.data.image_column,
                                   caption_column=cfg.data.caption_column,
                                   heldout_fraction=cfg.data.heldout_fraction,
                                   cache_dir=cfg.data.cache_dir)
    return model, data
