"""Export a trained model in transformers style, load it back, and generate text or captions.

An export folder is self-contained: the tokenizer's files plus, for the GPT-2 family, what
``save_pretrained`` writes (so ``AutoModelForCausalLM.from_pretrained(folder)`` works without
hivetrain), and for the multimodal family ``config.json`` + ``model.safetensors`` read by
:func:`hivetrain.model.multimodal.load_multimodal`. :func:`load_exported` tells them apart by
the config's ``model_type``.

``hivetrain export`` writes such a folder from the live swarm (it joins the DHT as a client and
downloads the swarm-global state, as a validator does) or from a miner's ``checkpoint.pt``,
optionally pushing it to the hub; ``hivetrain generate`` captions an image or continues a prompt
with one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hivetrain.data.shapes import COLOURS, POSITIONS, SHAPES, parse_caption
from hivetrain.data.tokenizer import eos_id, load_tokenizer
from hivetrain.errors import OperatorError
from hivetrain.host import check_writable_dir, not_writable
from hivetrain.model.gpt2 import PRESETS, gpt2_config, padded_vocab_size
from hivetrain.model.multimodal import (CONFIG_NAME, IMAGE_END, IMAGE_SLOT, IMAGE_START, MM_PRESETS,
                                        MODEL_TYPE, MultimodalGPT2, load_multimodal,
                                        multimodal_config, save_multimodal)
from hivetrain.swarm_run import given_recipe_flags


class ExportError(OperatorError):
    """Exporting, loading or pushing failed for a reason the message states."""


def export_model(model: torch.nn.Module, tokenizer, out_dir: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` to ``out_dir`` (created if missing)."""
    out = check_writable_dir(Path(out_dir), "--out")
    try:
        if isinstance(model, MultimodalGPT2):
            save_multimodal(model, out)
        else:
            model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    except OSError as error:  # the disk filled up while writing
        raise ExportError(not_writable(out, "--out", error)) from None
    return out


def load_exported(path: str | Path) -> tuple[torch.nn.Module, object]:
    """The model and tokenizer that :func:`export_model` wrote, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / CONFIG_NAME).exists():
        raise ExportError(f"{path} is not an exported model (no {CONFIG_NAME})")
    kind = json.loads((path / CONFIG_NAME).read_text()).get("model_type")
    try:
        if kind == MODEL_TYPE:
            model = load_multimodal(path)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        return model.eval(), AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:  # missing or unreadable weights, config or tokenizer
        raise ExportError(f"cannot load the model in {path}: {error}") from error


def model_from_checkpoint(checkpoint: str | Path, tokenizer, preset: str | None = None):
    """The model saved in a miner's ``checkpoint.pt``, its preset inferred from the tensor shapes
    when ``preset`` is None (the checkpoint does not record it)."""
    try:
        fields = torch.load(checkpoint, map_location="cpu", weights_only=False)
        state = fields["model"]
    except Exception as error:  # pickle, zip, key and type errors all mean "unreadable"
        raise ExportError(f"{checkpoint} is not a readable hivetrain checkpoint "
                          f"({type(error).__name__})") from error
    embedding = next((v for k, v in state.items() if k.endswith("transformer.wte.weight")), None)
    if embedding is None:
        raise ExportError(f"{checkpoint} holds no GPT-2 token embedding")
    rows, vocab = embedding.shape[0], len(tokenizer)
    if not vocab <= rows <= padded_vocab_size(vocab):
        raise ExportError(f"{checkpoint} embeds {rows} tokens but the tokenizer has {vocab}; "
                          f"pass the tokenizer it was trained with (--data.tokenizer)")
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    candidates = [preset] if preset else [*PRESETS, *MM_PRESETS]
    for name in candidates:
        make = _builder(name, rows)
        with torch.device("meta"):
            meta = make()
        if {k: tuple(v.shape) for k, v in meta.state_dict().items()} == shapes:
            with torch.random.fork_rng(devices=[]):
                model = make()
            model.load_state_dict(state)
            return model.eval()
    raise ExportError(f"{checkpoint} matches " + (f"not the {preset} preset" if preset else
                      "no preset") + f"; choose one of {', '.join([*PRESETS, *MM_PRESETS])}")


def _builder(preset: str, rows: int):
    """A constructor for ``preset`` with exactly ``rows`` token embeddings (random init)."""
    from transformers import GPT2LMHeadModel

    if preset in PRESETS:
        config = gpt2_config(preset, rows, 1)
        config.vocab_size = rows
        return lambda: GPT2LMHeadModel(config)
    if preset in MM_PRESETS:
        config = multimodal_config(preset, rows, MM_PRESETS[preset].n_latents + 3)
        config.text["vocab_size"] = rows
        return lambda: MultimodalGPT2(config)
    raise ExportError(f"unknown preset {preset!r}; choose one of "
                      f"{', '.join([*PRESETS, *MM_PRESETS])}")


def push_to_hub(folder: str | Path, repo: str) -> str:
    """Upload ``folder`` to the hub model repo ``repo`` (created if missing); returns its URL."""
    from huggingface_hub import HfApi, get_token

    if get_token() is None:
        raise ExportError("pushing to the hub needs a token: run `hf auth login` or set HF_TOKEN")
    try:
        api = HfApi()
        url = api.create_repo(repo, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo)
    except Exception as error:  # network, auth and HTTP errors differ by library version
        reason = (str(error).splitlines() or [""])[0]
        raise ExportError(f"could not push {folder} to the hub repo {repo} "
                          f"({type(error).__name__}: {reason}); the export is kept there, "
                          f"retry with `hf upload {repo} {folder}`") from error
    return str(url)


@torch.no_grad()
def generate_ids(model: torch.nn.Module, input_ids: torch.Tensor, eos: int,
                 pixel_values: torch.Tensor | None = None,
                 max_new_tokens: int = 32) -> list[list[int]]:
    """Greedy continuations of each row of ``input_ids`` (equal lengths), cut at ``eos``."""
    if isinstance(model, MultimodalGPT2):
        lm, embeds = model.text, model.embed(input_ids, pixel_values)
    else:
        lm, embeds = model, model.get_input_embeddings()(input_ids)
    room = min(max_new_tokens, lm.config.n_positions - input_ids.shape[1])
    out, steps = lm(inputs_embeds=embeds, use_cache=True), []
    for step in range(room):
        steps.append(out.logits[:, -1].argmax(-1))
        if step + 1 == room or bool((torch.stack(steps) == eos).any(0).all()):
            break
        out = lm(input_ids=steps[-1][:, None], past_key_values=out.past_key_values, use_cache=True)
    rows = torch.stack(steps, 1).tolist() if steps else [[] for _ in range(len(input_ids))]
    return [row[:row.index(eos)] if eos in row else row for row in rows]


def image_prompt(model: MultimodalGPT2) -> list[int]:
    """The placeholder span one image occupies (see :mod:`hivetrain.model.multimodal`)."""
    return [IMAGE_START] + [IMAGE_SLOT] * model.config.n_latents + [IMAGE_END]


def read_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """An image file as uint8 [1, 3, H, W], resized to ``size`` squares when given."""
    from PIL import Image

    try:
        image = Image.open(path).convert("RGB")
        image = image.resize((size, size), Image.BILINEAR) if size else image
    except OSError as error:
        raise ExportError(f"cannot read image {path}: {error}") from error
    return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()).unsqueeze(0)


def generate(model: torch.nn.Module, tokenizer, prompt: str = "", image: torch.Tensor | None = None,
             max_new_tokens: int = 32) -> str:
    """Caption ``image`` (uint8 [1, 3, H, W]) and/or continue ``prompt``, greedily."""
    eos = eos_id(tokenizer)
    ids = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
    if image is not None:
        if not isinstance(model, MultimodalGPT2):
            raise ExportError("this model reads text only; drop --image")
        ids = image_prompt(model) + ids
    ids = ids or [eos]  # an empty prompt starts a new document
    new = generate_ids(model, torch.tensor([ids]), eos, image, max_new_tokens)[0]
    return tokenizer.decode(new)


def caption_accuracy(model: MultimodalGPT2, data, n_images: int = 256,
                     batch_size: int = 64) -> dict:
    """How often greedy captions of held-out shapes scenes name the right shape, colour and
    position, against the chance rate of each (one over the number of choices)."""
    eos, span = eos_id(data.tokenizer), image_prompt(model)
    index = np.linspace(0, data.n_heldout - 1, n_images).round().astype(int)
    hits = {"shape": 0, "colour": 0, "position": 0}
    examples = []
    for chunk in np.array_split(index, max(1, n_images // batch_size)):
        items = [data.heldout_item(int(i)) for i in chunk]
        pixels = torch.from_numpy(np.stack([image for image, _ in items]))
        ids = torch.tensor([span] * len(items))
        for (_, truth), new in zip(items, generate_ids(model, ids, eos, pixels, 24)):
            said = data.tokenizer.decode(new)
            expected = parse_caption(truth)
            for key, value in parse_caption(said).items():
                hits[key] += value == expected[key]
            examples.append((truth, said))
    chance = {"shape": 1 / len(SHAPES), "colour": 1 / len(COLOURS), "position": 1 / len(POSITIONS)}
    return {"rate": {key: hit / n_images for key, hit in hits.items()}, "chance": chance,
            "examples": examples[:8]}


def model_from_swarm(cfg, given: list[str]) -> tuple[torch.nn.Module, object, str]:
    """The swarm's current model, its tokenizer and where it came from (epoch and run_id),
    downloaded from the peers of its run.

    Bootstraps like ``hivetrain status`` (chain commitments plus ``--dht.initial_peers``, client
    mode: nothing needs to dial this machine) and loads the global state as validators do. The
    run is the one the neurons committed on chain, rebuilt from the recipe its miners serve
    unless the flags ``given`` make the same run (:func:`hivetrain.swarm_run.swarm_recipe`).
    """
    from hivetrain.chain import Chain
    from hivetrain.swarm.dht import start_dht
    from hivetrain.swarm.optimizer import make_optimizer
    from hivetrain.swarm_run import swarm_recipe, swarm_run_id

    chain = Chain.open(cfg.subtensor.network, cfg.subtensor.chain_endpoint,
                       cfg.chain.path or str(cfg.run_dir / "chain.sqlite"), cfg.netuid)
    try:
        initial_peers = [*cfg.dht.initial_peers, *chain.discover_dht_addrs()]
        committed = chain.committed_run_ids()
        metagraph = chain.metagraph(refresh=True)
    finally:
        chain.close()
    run_id, disagreement = swarm_run_id(committed)
    if disagreement:
        _warn(disagreement)
    axons = [metagraph.axons[uid] for uid in metagraph.uids
             if committed.get(metagraph.hotkeys[uid]) == run_id and metagraph.axons[uid]]
    cfg, recipe = swarm_recipe(cfg, given, run_id, axons, _warn)
    dht = start_dht(cfg.dht.host_ip, 0, None, initial_peers, None, cfg.dht.bootstrap_timeout,
                    client_mode=True)
    try:
        optimizer = make_optimizer(dht, recipe.run_id, recipe.model, cfg.train,
                                   torch.device("cpu"), observer=True)
        try:
            optimizer.wait_for_swarm_progress(30)
            if optimizer.swarm_epoch == 0 and not optimizer.swarm_peers:
                raise ExportError(f"no peer of run {recipe.run_id} reports progress; is the swarm "
                                  f"running (hivetrain status shows it)? Or export a miner's "
                                  f"--checkpoint")
            optimizer.load_global_state()
            epoch = optimizer.local_epoch
        finally:
            optimizer.shutdown()
    finally:
        dht.shutdown()
    return recipe.model, recipe.tokenizer, f"the swarm at epoch {epoch} (run {recipe.run_id})"


def run_export(args: argparse.Namespace, cfg) -> None:
    """``hivetrain export``: swarm or checkpoint -> folder (-> hub); ``cfg`` from the flags."""
    if args.checkpoint:
        if not Path(args.checkpoint).is_file():
            raise ExportError(f"--checkpoint {args.checkpoint} is not a file")
        tokenizer = load_tokenizer(cfg.data.tokenizer)
        preset = getattr(args, "model.preset", None)  # inferred from the shapes when not given
        model = model_from_checkpoint(args.checkpoint, tokenizer, preset)
        source = args.checkpoint
    else:
        model, tokenizer, source = model_from_swarm(cfg, given_recipe_flags(args))
    out = export_model(model, tokenizer, args.out)
    print(f"exported {type(model).__name__} from {source} to {out}")
    if args.push_to_hub:
        print(f"pushed to {push_to_hub(out, args.push_to_hub)}")


def _warn(line: str) -> None:
    print(f"hivetrain export: warning: {line}", file=sys.stderr)


def run_generate(args: argparse.Namespace) -> None:
    """``hivetrain generate``: print the greedy continuation of an image and/or prompt."""
    if args.max_new_tokens < 1:
        raise ExportError("--max-new-tokens must be at least 1")
    model, tokenizer = load_exported(args.model)
    size = getattr(model.config, "image_size", None)  # None for text-only models
    image = read_image(args.image, size) if args.image else None
    print(generate(model, tokenizer, args.prompt, image, args.max_new_tokens))
