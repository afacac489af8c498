"""Export, load, checkpoint conversion, generation and the CLI commands around them."""

import pytest
import torch

from hivetrain.cli import main
from hivetrain.data import load_tokenizer
from hivetrain.data.captions import shapes_data
from hivetrain.data.shapes import render, scene
from hivetrain.export import (ExportError, caption_accuracy, export_model, generate,
                              load_exported, model_from_checkpoint, push_to_hub)
from hivetrain.miner.checkpoint import Checkpoint, save_checkpoint
from hivetrain.model.gpt2 import build_model, param_digest
from hivetrain.model.multimodal import MultimodalGPT2, build_multimodal_model

SEQ_LEN = 32


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def mm_model():
    return build_multimodal_model("mm-tiny", 4096, SEQ_LEN, seed=5).eval()


@pytest.fixture(scope="module")
def batch(tokenizer, mm_model):
    return shapes_data(tokenizer, mm_model.config.n_latents).probe_batch(1, 2, SEQ_LEN)


def logits(model, batch):
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_multimodal_export_round_trip_gives_identical_logits(tmp_path, tokenizer, mm_model, batch):
    export_model(mm_model, tokenizer, tmp_path / "mm")
    loaded, loaded_tokenizer = load_exported(tmp_path / "mm")
    assert isinstance(loaded, MultimodalGPT2) and param_digest(loaded) == param_digest(mm_model)
    assert torch.equal(logits(loaded, batch), logits(mm_model, batch))
    assert loaded_tokenizer.encode("a red circle") == tokenizer.encode("a red circle")


def test_gpt2_export_is_a_plain_transformers_folder(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    model = build_model("tiny", 4096, SEQ_LEN, seed=2).eval()
    export_model(model, tokenizer, tmp_path / "gpt2")
    ids = torch.randint(0, 4096, (2, 16))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "gpt2").eval()
    loaded, _ = load_exported(tmp_path / "gpt2")
    with torch.no_grad():
        expected = model(ids).logits
        assert torch.equal(plain(ids).logits, expected) and torch.equal(loaded(ids).logits, expected)


@pytest.mark.parametrize("kind", ["gpt2", "multimodal"])
def test_export_command_converts_a_miner_checkpoint(tmp_path, kind, mm_model, capsys):
    model = mm_model if kind == "multimodal" else build_model("tiny", 4096, SEQ_LEN, seed=3)
    path = save_checkpoint(tmp_path, Checkpoint(run_id="run", epoch=4, samples=64,
                                                model=model.state_dict(), optimizer={}))
    assert main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "exported" in capsys.readouterr().out
    loaded, _ = load_exported(tmp_path / "out")
    assert type(loaded) is type(model) and param_digest(loaded) == param_digest(model)


def test_a_checkpoint_of_another_preset_or_tokenizer_is_a_clear_error(tmp_path, tokenizer):
    path = save_checkpoint(tmp_path, Checkpoint(run_id="run", epoch=0, samples=0, optimizer={},
                                                model=build_model("tiny", 4096, 32, 0).state_dict()))
    with pytest.raises(ExportError, match="matches not the gpt2 preset"):
        model_from_checkpoint(path, tokenizer, preset="gpt2")
    with pytest.raises(ExportError, match="embeds 4096 tokens but the tokenizer has"):
        model_from_checkpoint(path, load_tokenizer(str(_small_tokenizer(tmp_path, tokenizer))))


def _small_tokenizer(tmp_path, tokenizer):
    """A saved tokenizer with two extra tokens: 4098 ids, more than the checkpoint embeds."""
    tokenizer = load_tokenizer()
    tokenizer.add_tokens(["<extra-a>", "<extra-b>"])
    tokenizer.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


def test_generate_command_captions_an_image_and_continues_text(tmp_path, tokenizer, mm_model,
                                                               capsys):
    from PIL import Image

    export_model(mm_model, tokenizer, tmp_path / "mm")
    image = tmp_path / "scene.png"
    Image.fromarray(render(scene("heldout", 0), 48).transpose(1, 2, 0)).save(image)
    args = ["generate", str(tmp_path / "mm"), "--image", str(image), "--max-new-tokens", "5"]
    assert main(args) == 0
    caption = capsys.readouterr().out.rstrip("\n")
    pixels = torch.from_numpy(render(scene("heldout", 0), 48)).unsqueeze(0)
    assert caption == generate(mm_model, tokenizer, image=pixels, max_new_tokens=5)

    export_model(build_model("tiny", 4096, SEQ_LEN, seed=2), tokenizer, tmp_path / "gpt2")
    assert main(["generate", str(tmp_path / "gpt2"), "--prompt", "The", "--max-new-tokens", "4"]) == 0
    assert main(["generate", str(tmp_path / "gpt2"), "--image", str(image)]) == 2
    assert "reads text only; drop --image" in capsys.readouterr().err


def test_export_and_generate_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["export", "--checkpoint", str(tmp_path / "junk.pt"), "--out", str(tmp_path)]) == 2
    assert main(["generate", str(tmp_path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    assert "not a readable hivetrain checkpoint" in errors[0]
    assert "is not an exported model" in errors[1]


def test_an_unwritable_out_folder_is_one_line_before_any_work(tmp_path, capsys):
    """Checked first, so a swarm export does not download for minutes and then lose it."""
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "a-file").write_text("in the way")
    out = tmp_path / "a-file" / "model"  # a read-only file system: tests/test_startup_errors.py
    assert main(["export", "--checkpoint", str(tmp_path / "junk.pt"), "--out", str(out)]) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert f"--out {out} is not writable (Not a directory)" in error and "another --out" in error


def test_push_to_hub_fails_clearly_without_a_token_or_a_network(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(hub, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(ExportError, match="needs a token"):
        push_to_hub(tmp_path, "someone/model")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(hub, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(ExportError, match="could not push .* to the hub repo someone/model"):
        push_to_hub(tmp_path, "someone/model")


def test_caption_accuracy_reports_rates_and_chance(tokenizer, mm_model):
    data = shapes_data(tokenizer, mm_model.config.n_latents)
    result = caption_accuracy(mm_model, data, n_images=8, batch_size=4)
    assert set(result["rate"]) == set(result["chance"]) == {"shape", "colour", "position"}
    assert all(0 <= rate <= 1 for rate in result["rate"].values())
    assert result["chance"]["shape"] == 1 / 4 and len(result["examples"]) == 8
