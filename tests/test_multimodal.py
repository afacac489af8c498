"""Multimodal GPT-2: presets, resampler, training modes, seeded init, hub loading, caption data."""

import numpy as np
import pytest
import torch

from hivetrain.data import load_tokenizer
from hivetrain.data.captions import load_image_caption_data, shapes_data
from hivetrain.data.shapes import parse_caption, render, scene
from hivetrain.data.split import is_heldout
from hivetrain.model.gpt2 import build_model, count_parameters, param_digest
from hivetrain.model.multimodal import (IMAGE_END, IMAGE_SLOT, IMAGE_START, MM_PRESETS,
                                        MultimodalGPT2, build_multimodal_model,
                                        multimodal_config, multimodal_fingerprint_facts)

SEQ_LEN = 32
PARTS = ("vision", "resampler", "projection", "image_markers", "text")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def data(tokenizer):
    return shapes_data(tokenizer, MM_PRESETS["mm-tiny"].n_latents)


def tiny(seed=0, mode="full"):
    return build_multimodal_model("mm-tiny", 4096, SEQ_LEN, seed=seed, mode=mode)


def part_sizes(model):
    return {part: sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] == part)
            for part in PARTS}


def test_mm_tiny_is_the_tiny_gpt2_plus_a_small_encoder_and_adapters():
    model = tiny()
    sizes = part_sizes(model)
    assert count_parameters(model) == sum(sizes.values())
    assert sizes["text"] == count_parameters(build_model("tiny", 4096, SEQ_LEN, seed=0))
    assert 0 < sizes["vision"] + sizes["resampler"] + sizes["projection"] < sizes["text"] / 5
    assert model.config.vocab_size == 4096 and model.config.n_positions == 512


def test_gpu_preset_is_clip_vit_l14_plus_gpt2_medium():
    """Counted from config on the meta device: no weights, no network."""
    with torch.device("meta"):
        model = MultimodalGPT2(multimodal_config("mm-clip-gpt2-medium", 50257, 1024))
    sizes = part_sizes(model)
    assert sizes["vision"] / 1e6 == pytest.approx(303.2, abs=0.5)  # CLIP ViT-L/14 vision tower
    assert sizes["text"] / 1e6 == pytest.approx(354.8, abs=0.6)  # gpt2-medium, padded vocab
    model.set_mode("projection")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sizes["resampler"] + sizes["projection"] + sizes["image_markers"]


def test_resampler_gives_n_latents_in_gpt2_width_whatever_the_patch_count():
    model = tiny().eval()
    n_latents, width = model.config.n_latents, model.config.text["n_embd"]
    for side in (32, 48):  # 48 px is resized to the encoder's 32 inside the model
        pixels = torch.randint(0, 256, (3, 3, side, side), dtype=torch.uint8)
        assert model.encode_images(pixels).shape == (3, n_latents, width)
    features = torch.randn(2, 17, model.config.vision["hidden_size"])
    assert model.resampler(features).shape == (2, n_latents, model.config.vision["hidden_size"])


def test_projection_mode_trains_only_the_adapters_and_leaves_the_rest_bit_unchanged(data):
    model = tiny(mode="projection")
    assert model.trainable_parts() == ["image_markers", "projection", "resampler"]
    assert not any(p.requires_grad for p in [*model.vision.parameters(), *model.text.parameters()])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for batch in data.heldout_batches(3, 4, SEQ_LEN):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, param in model.named_parameters():
        if name.split(".")[0] in ("vision", "text"):
            assert param.grad is None and torch.equal(param, before[name]), name
    for part in ("resampler.latents", "projection.weight", "image_markers"):
        assert not torch.equal(dict(model.named_parameters())[part], before[part]), part


def test_seeded_build_is_byte_identical_seed_dependent_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first, second = tiny(seed=3), tiny(seed=3)
    assert torch.equal(torch.rand(3), expected)
    assert param_digest(first) == param_digest(second)
    assert param_digest(tiny(seed=4)) != param_digest(first)


def test_fingerprint_says_which_parts_train():
    full, projection = tiny(), tiny(mode="projection")
    assert multimodal_fingerprint_facts(full)["trainable"] == list(sorted(PARTS))
    assert multimodal_fingerprint_facts(projection)["trainable"] == ["image_markers", "projection",
                                                                     "resampler"]
    assert multimodal_fingerprint_facts(full) != multimodal_fingerprint_facts(projection)


def test_loss_is_deterministic_in_eval_mode_and_scores_only_the_caption(data):
    model = tiny().eval()
    batch = data.probe_batch(5, 4, SEQ_LEN)
    span = 2 + model.config.n_latents
    assert (batch["labels"][:, :span] == -100).all() and batch["pixel_values"].dtype == torch.uint8
    with torch.no_grad():
        assert model(**batch).loss.item() == model(**batch).loss.item()


def test_images_fill_interleaved_spans_in_reading_order():
    """Row 0 holds text, image, text, image; row 1 is text only. Changing the second image
    changes the logits after its span only (GPT-2 is causal)."""
    model = tiny().eval()
    span = [IMAGE_START] + [IMAGE_SLOT] * model.config.n_latents + [IMAGE_END]
    row0 = [5, 6] + span + [7] + span + [8, 9]
    ids = torch.tensor([row0, list(range(10, 10 + len(row0)))])
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    changed = pixels.clone()
    changed[1] = 255 - changed[1]
    with torch.no_grad():
        logits, other = model(ids, pixel_values=pixels).logits, model(ids, pixel_values=changed).logits
    second = 2 + len(span) + 1
    assert torch.equal(logits[:, :second], other[:, :second])
    assert not torch.allclose(logits[0, second:], other[0, second:])
    assert torch.equal(logits[1], other[1])


def test_bad_inputs_are_clear_errors():
    model = tiny()
    span = [IMAGE_START] + [IMAGE_SLOT] * model.config.n_latents + [IMAGE_END]
    pixels = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="1 image spans but pixel_values has 0 images"):
        model(torch.tensor([span + [1]]))
    with pytest.raises(ValueError, match="is not <image>, 8 slots, </image>"):
        model(torch.tensor([span[:-2] + [1, IMAGE_END, 1]]), pixel_values=pixels)
    with pytest.raises(ValueError, match="pixel_values must be uint8"):
        model(torch.tensor([span + [1]]), pixel_values=pixels.float())
    with pytest.raises(ValueError, match="unknown multimodal mode 'half'"):
        model.set_mode("half")
    with pytest.raises(ValueError, match="unknown multimodal preset 'mm-huge'"):
        multimodal_config("mm-huge", 4096, SEQ_LEN)
    with pytest.raises(ValueError, match="leaves no room for text"):
        multimodal_config("mm-tiny", 4096, 10)


def test_hub_weights_load_into_the_preset_through_from_pretrained(tmp_path, monkeypatch):
    """The GPU preset's code path, with a tiny CLIP (full model: its vision tower is taken) and a
    tiny GPT-2 saved locally instead of fetched from the hub."""
    from dataclasses import replace

    from transformers import CLIPConfig, CLIPModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vision = dict(MM_PRESETS["mm-tiny"].vision)
        vision.pop("model_type")
        clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            vocab_size=99), projection_dim=16))
    clip.save_pretrained(tmp_path / "clip")
    gpt2 = build_model("tiny", 4096, SEQ_LEN, seed=7)
    gpt2.save_pretrained(tmp_path / "gpt2")
    monkeypatch.setitem(MM_PRESETS, "mm-local", replace(
        MM_PRESETS["mm-clip-gpt2-medium"], text="tiny", n_latents=4, resampler_heads=4,
        vision_weights=str(tmp_path / "clip"), text_weights=str(tmp_path / "gpt2")))
    model = build_multimodal_model("mm-local", 4096, SEQ_LEN, seed=0, mode="projection")
    assert param_digest(model.text) == param_digest(gpt2)
    assert param_digest(model.vision) == param_digest(clip.vision_model)
    assert param_digest(build_multimodal_model("mm-local", 4096, SEQ_LEN, seed=0)) == \
        param_digest(model)
    with pytest.raises(ValueError, match="has 4096 token embeddings but the tokenizer has 50257"):
        build_multimodal_model("mm-local", 50257, SEQ_LEN, seed=0)


def test_shapes_scenes_are_deterministic_and_captioned_by_their_attributes():
    first, again = scene("train", 11), scene("train", 11)
    assert first == again and np.array_equal(render(first, 32), render(again, 32))
    assert parse_caption(first.caption) == {"shape": first.shape, "colour": first.colour,
                                            "position": first.position}
    image = render(first, 32)
    assert image.shape == (3, 32, 32) and image.dtype == np.uint8
    assert (image != np.array(first.background, np.uint8)[:, None, None]).any()  # shape drawn


def test_heldout_scenes_differ_from_training_scenes():
    train = {render(scene("train", i), 32).tobytes() for i in range(2000)}
    heldout = [render(scene("heldout", i), 32).tobytes() for i in range(200)]
    assert not train.intersection(heldout)


def test_batches_are_deterministic_where_they_must_be(data):
    first = next(data.train_batches("peer-a", 4, SEQ_LEN))
    assert torch.equal(first["input_ids"], next(data.train_batches("peer-a", 4, SEQ_LEN))["input_ids"])
    assert not torch.equal(first["pixel_values"],
                           next(data.train_batches("peer-b", 4, SEQ_LEN))["pixel_values"])
    probe = data.probe_batch(42, 4, SEQ_LEN)
    for key, value in data.probe_batch(42, 4, SEQ_LEN).items():
        assert torch.equal(value, probe[key]), key
    assert not torch.equal(data.probe_batch(43, 4, SEQ_LEN)["pixel_values"], probe["pixel_values"])
    heldout = data.heldout_batches(2, 4, SEQ_LEN)
    assert torch.equal(heldout[1]["pixel_values"], data.heldout_batches(2, 4, SEQ_LEN)[1]["pixel_values"])


def test_a_batch_row_is_span_caption_eos_then_unscored_padding(data, tokenizer):
    image, caption = data.heldout_item(0)
    batch = data.batch([(image, caption)], SEQ_LEN)
    caption_ids = tokenizer.encode(caption, add_special_tokens=False) + [0]
    span = data.image_span()
    row, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    end = len(span) + len(caption_ids)
    assert row[:end] == span + caption_ids and set(row[end:]) == {0}
    assert labels == [-100] * len(span) + caption_ids + [-100] * (SEQ_LEN - end)
    assert torch.equal(batch["pixel_values"][0], torch.from_numpy(image))


def pairs(n):
    from PIL import Image

    scenes = [scene("files", i) for i in range(n)]
    images = [Image.fromarray(render(s, 32).transpose(1, 2, 0)) for s in scenes]
    return images, [f"{s.caption} number {i}" for i, s in enumerate(scenes)]


def test_local_parquet_and_image_folder_pairs_load(tmp_path, tokenizer):
    from datasets import Dataset, Image

    images, captions = pairs(16)
    Dataset.from_dict({"image": images, "caption": captions}).cast_column("image", Image()) \
        .to_parquet(str(tmp_path / "pairs.parquet"))
    folder = tmp_path / "folder"
    folder.mkdir()
    lines = []
    for i, (image, caption) in enumerate(zip(images, captions)):
        image.save(folder / f"{i}.png")
        lines.append(f'{{"file_name": "{i}.png", "text": "{caption}"}}')
    (folder / "metadata.jsonl").write_text("\n".join(lines))
    heldout = [c for c in captions if is_heldout(c, 0.3)]
    for source, column in ((str(tmp_path / "*.parquet"), "caption"), (str(folder), "text")):
        data = load_image_caption_data(source, tokenizer, 8, caption_column=column,
                                       heldout_fraction=0.3, cache_dir=str(tmp_path / "cache"))
        assert (data.n_heldout, data.n_train) == (len(heldout), 16 - len(heldout))
        image, caption = data.heldout_item(0)
        assert caption == heldout[0]
        assert np.array_equal(image, np.asarray(images[captions.index(caption)]).transpose(2, 0, 1))
        batch = next(data.train_batches("peer", 3, SEQ_LEN))
        assert batch["pixel_values"].shape == (3, 3, 32, 32)


def test_a_missing_image_column_is_a_clear_error(tmp_path, tokenizer):
    from datasets import Dataset

    Dataset.from_dict({"picture": [b"x"], "caption": ["a"]}).to_parquet(str(tmp_path / "p.parquet"))
    with pytest.raises(ValueError, match="image column 'image' is not in .*picture, caption"):
        load_image_caption_data(str(tmp_path / "p.parquet"), tokenizer, 8,
                                cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="matched no files"):
        load_image_caption_data(str(tmp_path / "none-*.parquet"), tokenizer, 8)
