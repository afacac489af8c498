"""GPT-2 presets: parameter counts, byte-identical seeded init, pretrained loading."""

import pytest

from hivetrain.model.gpt2 import PRESETS, build_model, count_parameters, gpt2_config, param_digest

GPT2_VOCAB = 50257


def test_tiny_preset_is_about_one_to_two_million_parameters():
    assert 1_000_000 <= count_parameters(build_model("tiny", 4096, 128, seed=0)) <= 2_000_000


@pytest.mark.parametrize("preset, millions", [("gpt2", 124.4), ("gpt2-medium", 354.8),
                                              ("gpt2-677m", 677.0), ("gpt2-large", 773.9)])
def test_large_presets_match_their_names(preset, millions):
    """Counted from the config on the meta device, so no memory is allocated."""
    import torch
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(gpt2_config(preset, GPT2_VOCAB, 1024))
    assert count_parameters(model) / 1e6 == pytest.approx(millions, abs=0.6)


def test_seeded_init_is_byte_identical_and_seed_dependent():
    first, second = build_model("tiny", 4096, 128, seed=3), build_model("tiny", 4096, 128, seed=3)
    assert param_digest(first) == param_digest(second)
    assert param_digest(build_model("tiny", 4096, 128, seed=4)) != param_digest(first)


def test_building_a_model_leaves_the_global_rng_alone():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("tiny", 4096, 128, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_bad_preset_and_too_long_sequences_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        gpt2_config("huge", 4096, 128)
    with pytest.raises(ValueError, match="exceeds the tiny preset's 512 positions"):
        gpt2_config("tiny", 4096, 4096)
    assert set(PRESETS) == {"tiny", "gpt2", "gpt2-medium", "gpt2-677m", "gpt2-large"}


def test_pretrained_loads_a_local_transformers_checkpoint(tmp_path):
    """The hub code path (from_pretrained), exercised with a local folder."""
    saved = build_model("tiny", 4096, 128, seed=9)
    saved.save_pretrained(tmp_path / "ckpt")
    loaded = build_model("tiny", 4096, 128, seed=0, pretrained=str(tmp_path / "ckpt"))
    assert param_digest(loaded) == param_digest(saved)
