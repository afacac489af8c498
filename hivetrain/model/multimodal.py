"""Multimodal GPT-2: a vision encoder, a perceiver resampler and a projection feed images to GPT-2.

An image becomes ``n_latents`` vectors in GPT-2's embedding space: a transformers vision model
(CLIP, SigLIP or ViT vision tower) turns pixels into patch features, a perceiver resampler pools
them into a fixed number of latents (so the sequence length does not depend on the encoder's
patch count) and a linear layer maps the latents to GPT-2's width. Two learned vectors mark the
span, so a caption model and an interleaved image-text model are the same code.

**Placeholder convention.** The shared tokenizer is not changed (text-only runs keep their
fingerprint), so image positions use negative ids that no tokenizer produces. Each image is the
span ``IMAGE_START, IMAGE_SLOT * n_latents, IMAGE_END`` anywhere in ``input_ids``; the model
embeds the markers with its two learned vectors and the slots with the image's latents. Images
in ``pixel_values`` ([n_images, 3, H, W] uint8, normalised and resized inside the model) fill
the spans in reading order (row by row, left to right); one caption per row means n_images = B.
Labels of image positions are -100. Because a span occupies real positions, sequence lengths,
position embeddings and the probe's ``[batch, seq]`` shapes stay those of the text model.

**Training modes.** ``full`` trains everything; ``projection`` freezes the vision encoder and
GPT-2 (``requires_grad=False``, so the swarm neither averages them nor keeps optimizer state for
them) and trains only the resampler, the projection and the two markers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (MODEL_MAPPING, AutoConfig, AutoModel, AutoModelForCausalLM, GPT2Config,
                          GPT2LMHeadModel)

from hivetrain.model.gpt2 import gpt2_config, model_fingerprint_facts, padded_vocab_size
from hivetrain.image_tokens import IMAGE_END, IMAGE_SLOT, IMAGE_START  # noqa: F401 (re-exported)
MODES = ("full", "projection")
MODEL_TYPE = "hivetrain_multimodal_gpt2"
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class MMPreset:
    """One multimodal architecture.

    ``vision`` holds transformers config kwargs (with ``model_type``), used when the encoder is
    built from config and for counting parameters offline; ``vision_weights`` / ``text_weights``
    name hub models or local folders whose weights (and own configs) replace the seeded init.
    """

    text: str
    vision: dict
    n_latents: int
    resampler_depth: int
    resampler_heads: int
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.5, 0.5, 0.5)
    vision_weights: str | None = None
    text_weights: str | None = None


MM_PRESETS: dict[str, MMPreset] = {
    # CPU and tests: a 32px CLIP-style encoder (64 patches of 4px) and the tiny GPT-2.
    "mm-tiny": MMPreset(
        text="tiny", n_latents=8, resampler_depth=1, resampler_heads=4,
        vision=dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=4)),
    # GPU: CLIP ViT-L/14 vision tower + gpt2-medium, both from the hub; needs GPT-2's tokenizer
    # (--data.tokenizer gpt2) since the pretrained embeddings are indexed by its ids.
    "mm-clip-gpt2-medium": MMPreset(
        text="gpt2-medium", n_latents=64, resampler_depth=2, resampler_heads=16,
        vision=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                    num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=14,
                    projection_dim=768, hidden_act="quick_gelu"),
        image_mean=CLIP_MEAN, image_std=CLIP_STD,
        vision_weights="openai/clip-vit-large-patch14", text_weights="gpt2-medium"),
}


@dataclass
class MultimodalConfig:
    """Everything that decides the architecture; saved as ``config.json`` by :func:`save_multimodal`.

    ``text`` and ``vision`` are the transformers configs as dicts. ``vocab_size`` and
    ``n_positions`` are the text model's, which is what code written for GPT-2 reads.
    """

    text: dict
    vision: dict
    n_latents: int
    resampler_depth: int
    resampler_heads: int
    image_mean: tuple
    image_std: tuple
    mode: str = "full"
    model_type: str = MODEL_TYPE

    @property
    def vocab_size(self) -> int:
        return self.text["vocab_size"]

    @property
    def n_positions(self) -> int:
        return self.text["n_positions"]

    @property
    def image_size(self) -> int:
        return self.vision["image_size"]

    def text_config(self) -> GPT2Config:
        return GPT2Config.from_dict(self.text)

    def vision_config(self):
        return AutoConfig.for_model(**self.vision)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "MultimodalConfig":
        if values.get("model_type") != MODEL_TYPE:
            raise ValueError(f"model_type {values.get('model_type')!r} is not {MODEL_TYPE!r}")
        values = dict(values, image_mean=tuple(values["image_mean"]),
                      image_std=tuple(values["image_std"]))
        return cls(**values)


class ResamplerBlock(nn.Module):
    """Latents attend to the image features and to themselves (Flamingo), then a feed-forward."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_media, self.norm_latents, self.norm_ff = (nn.LayerNorm(dim) for _ in range(3))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        query = self.norm_latents(latents)
        keys = torch.cat([self.norm_media(media), query], dim=1)
        latents = latents + self.attn(query, keys, keys, need_weights=False)[0]
        return latents + self.ff(self.norm_ff(latents))


class PerceiverResampler(nn.Module):
    """[n, patches, dim] features -> [n, n_latents, dim], whatever the patch count."""

    def __init__(self, dim: int, n_latents: int, depth: int, heads: int):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(n_latents, dim) * 0.02)
        self.blocks = nn.ModuleList(ResamplerBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, media: torch.Tensor) -> torch.Tensor:
        latents = self.latents.expand(media.shape[0], -1, -1)
        for block in self.blocks:
            latents = block(media, latents)
        return self.norm(latents)


class MultimodalGPT2(nn.Module):
    """GPT-2 that reads images at placeholder spans (see the module docstring).

    ``forward(input_ids, labels=None, pixel_values=None)`` returns GPT-2's output (``.loss``,
    ``.logits``). Pass prebuilt ``vision`` / ``text`` modules to use pretrained weights.
    """

    def __init__(self, config: MultimodalConfig, vision: nn.Module | None = None,
                 text: GPT2LMHeadModel | None = None):
        super().__init__()
        self.config = config
        vision_dim, text_dim = config.vision["hidden_size"], config.text["n_embd"]
        # Adapters first, so their seeded init does not depend on how the big parts are made.
        self.resampler = PerceiverResampler(vision_dim, config.n_latents, config.resampler_depth,
                                            config.resampler_heads)
        self.projection = nn.Linear(vision_dim, text_dim)
        self.image_markers = nn.Parameter(torch.randn(2, text_dim) * 0.02)
        self.vision = vision if vision is not None else AutoModel.from_config(config.vision_config())
        self.text = text if text is not None else GPT2LMHeadModel(config.text_config())
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1),
                             persistent=False)
        self.set_mode(config.mode)

    def set_mode(self, mode: str) -> None:
        """Freeze or unfreeze the encoder and GPT-2: ``full`` trains all, ``projection`` adapters."""
        if mode not in MODES:
            raise ValueError(f"unknown multimodal mode {mode!r}; choose one of {', '.join(MODES)}")
        self.config.mode = mode
        for part in (self.vision, self.text):
            part.requires_grad_(mode == "full")

    def trainable_parts(self) -> list[str]:
        """Top-level parts with trainable parameters, e.g. ['image_markers', 'projection', ...]."""
        return sorted({name.split(".")[0] for name, p in self.named_parameters() if p.requires_grad})

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """uint8 [n, 3, H, W] -> [n, n_latents, n_embd] inputs for GPT-2."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3 or pixel_values.dtype != torch.uint8:
            raise ValueError(f"pixel_values must be uint8 [n, 3, H, W], got "
                             f"{pixel_values.dtype} {tuple(pixel_values.shape)}")
        pixels = pixel_values.to(self.image_mean.device, torch.float32) / 255.0
        size = self.config.image_size
        if pixels.shape[-2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False,
                                   antialias=True)
        pixels = ((pixels - self.image_mean) / self.image_std).to(self.projection.weight.dtype)
        features = self.vision(pixel_values=pixels).last_hidden_state
        return self.projection(self.resampler(features))

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """GPT-2 input embeddings of ``input_ids`` with image spans filled in."""
        wte = self.text.get_input_embeddings()
        embeds = wte(input_ids.clamp(min=0))
        starts = (input_ids == IMAGE_START).nonzero().tolist()
        n_images = 0 if pixel_values is None else pixel_values.shape[0]
        if len(starts) != n_images:
            raise ValueError(f"input_ids hold {len(starts)} image spans but pixel_values has "
                             f"{n_images} images")
        if not starts:
            if (input_ids < 0).any():
                raise ValueError("input_ids hold image placeholders outside an image span")
            return embeds
        self._check_spans(input_ids, starts)
        latents = self.encode_images(pixel_values).to(embeds.dtype)
        slots = (input_ids == IMAGE_SLOT).unsqueeze(-1)
        embeds = embeds.masked_scatter(slots, latents.reshape(-1, latents.shape[-1]))
        start_marker, end_marker = self.image_markers.to(embeds.dtype)
        embeds = torch.where((input_ids == IMAGE_START).unsqueeze(-1), start_marker, embeds)
        return torch.where((input_ids == IMAGE_END).unsqueeze(-1), end_marker, embeds)

    def _check_spans(self, input_ids: torch.Tensor, starts: list[list[int]]) -> None:
        span = [IMAGE_START] + [IMAGE_SLOT] * self.config.n_latents + [IMAGE_END]
        expected = torch.tensor(span, device=input_ids.device)
        for row, col in starts:
            if not torch.equal(input_ids[row, col:col + len(span)], expected):
                raise ValueError(f"image span at row {row}, position {col} is not <image>, "
                                 f"{self.config.n_latents} slots, </image>")
        if (input_ids < 0).sum() != len(starts) * len(span):
            raise ValueError("input_ids hold image placeholders outside an image span")

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, **kwargs):
        return self.text(inputs_embeds=self.embed(input_ids, pixel_values), labels=labels, **kwargs)


def multimodal_config(preset: str, vocab_size: int, seq_len: int,
                      mode: str = "full") -> MultimodalConfig:
    """The seeded-init config of ``preset`` (no weights, no network), for ``vocab_size`` tokens."""
    if preset not in MM_PRESETS:
        raise ValueError(f"unknown multimodal preset {preset!r}; choose one of "
                         f"{', '.join(MM_PRESETS)}")
    arch = MM_PRESETS[preset]
    text = gpt2_config(arch.text, vocab_size, seq_len)
    _check_room(seq_len, arch.n_latents)
    return MultimodalConfig(text=text.to_dict(), vision=dict(arch.vision),
                            n_latents=arch.n_latents, resampler_depth=arch.resampler_depth,
                            resampler_heads=arch.resampler_heads, image_mean=arch.image_mean,
                            image_std=arch.image_std, mode=mode)


def build_multimodal_model(preset: str, vocab_size: int, seq_len: int, seed: int,
                           mode: str = "full", pretrained: str | None = None) -> MultimodalGPT2:
    """Build on the CPU in float32: seeded adapters, and encoder/GPT-2 seeded or from the hub.

    The preset's ``vision_weights`` / ``text_weights`` are loaded when set (the hub code path);
    everything else is initialised under ``seed`` inside a forked RNG, byte-identically on every
    peer, like :func:`hivetrain.model.gpt2.build_model`.

    :param pretrained: a folder written by :func:`save_multimodal`; its config decides everything.
    """
    if pretrained:
        model = load_multimodal(pretrained)
        model.set_mode(mode)
        return model
    config = multimodal_config(preset, vocab_size, seq_len, mode)
    arch = MM_PRESETS[preset]
    vision = _load_vision(arch.vision_weights) if arch.vision_weights else None
    text = _load_text(arch.text_weights, vocab_size, seq_len) if arch.text_weights else None
    if vision is not None:
        config.vision = vision.config.to_dict()
    if text is not None:
        config.text = text.config.to_dict()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultimodalGPT2(config, vision, text)


def _check_room(seq_len: int, n_latents: int) -> None:
    if seq_len < n_latents + 3:
        raise ValueError(f"--data.seq_len {seq_len} leaves no room for text after an image's "
                         f"{n_latents + 2} positions")


def _load_vision(name_or_path: str) -> nn.Module:
    """The vision tower of a CLIP/SigLIP checkpoint, or a plain vision model (ViT, a tower)."""
    config = AutoConfig.from_pretrained(name_or_path)
    config = getattr(config, "vision_config", config)
    return MODEL_MAPPING[type(config)].from_pretrained(name_or_path, config=config,
                                                       dtype=torch.float32)


def _load_text(name_or_path: str, vocab_size: int, seq_len: int) -> GPT2LMHeadModel:
    text = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
    rows = text.config.vocab_size
    if not vocab_size <= rows <= padded_vocab_size(vocab_size):
        raise ValueError(f"{name_or_path} has {rows} token embeddings but the tokenizer has "
                         f"{vocab_size} ids; use the tokenizer it was trained with "
                         f"(--data.tokenizer {name_or_path})")
    if seq_len > text.config.n_positions:
        raise ValueError(f"--data.seq_len {seq_len} exceeds {name_or_path}'s "
                         f"{text.config.n_positions} positions")
    return text


def multimodal_fingerprint_facts(model: MultimodalGPT2) -> dict:
    """What peers must share: text and vision architecture, resampler, normalisation, what trains."""
    cfg, vision = model.config, model.config.vision
    vision_keys = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                   "num_attention_heads", "image_size", "patch_size")
    return {"arch": MODEL_TYPE, "text": model_fingerprint_facts(model.text),
            "vision": {key: vision.get(key) for key in vision_keys},
            "n_latents": cfg.n_latents, "resampler_depth": cfg.resampler_depth,
            "resampler_heads": cfg.resampler_heads, "image_mean": list(cfg.image_mean),
            "image_std": list(cfg.image_std), "mode": cfg.mode,
            "trainable": model.trainable_parts()}


def save_multimodal(model: MultimodalGPT2, out_dir: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (tied GPT-2 weights stored once)."""
    from safetensors.torch import save_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True))
    save_model(model, str(out / WEIGHTS_NAME))
    return out


def load_multimodal(path: str | Path) -> MultimodalGPT2:
    """The model :func:`save_multimodal` wrote to ``path`` (a local folder)."""
    from safetensors.torch import load_model

    path = Path(path)
    if not (path / CONFIG_NAME).exists() or not (path / WEIGHTS_NAME).exists():
        raise FileNotFoundError(f"{path} holds no {CONFIG_NAME} and {WEIGHTS_NAME} of a "
                                f"multimodal model")
    config = MultimodalConfig.from_dict(json.loads((path / CONFIG_NAME).read_text()))
    # Built for real (not on the meta device) so non-persistent buffers such as position ids
    # are initialised; the forked RNG keeps the throwaway init from touching the caller's state.
    with torch.random.fork_rng(devices=[]):
        model = MultimodalGPT2(config)
    load_model(model, str(path / WEIGHTS_NAME))
    model.text.tie_weights()
    return model
