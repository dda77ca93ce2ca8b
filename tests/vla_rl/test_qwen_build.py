"""The local Qwen2-VL checkpoint builder."""

import json

import pytest

from vla_rl.qwen import build


def test_tiny_checkpoint_layout_and_reserved_vocabulary(tiny_qwen):
    import os

    from transformers import AutoTokenizer

    names = set(os.listdir(tiny_qwen))
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.json",
        "preprocessor_config.json",
        "generation_config.json",
    } <= names
    config = json.load(open(os.path.join(tiny_qwen, "config.json")))
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen)
    vocab = config["text_config"]["vocab_size"]
    assert len(tokenizer) <= vocab - build.NUM_RESERVED_TOKENS  # the last 256 ids are free for actions
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for word in ("Yes", "No", "+", "-", "1", "0"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1
    text = "put the red block in the blue tray"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_2b_preset_has_the_public_shapes(tiny_qwen):
    from transformers import AutoTokenizer, Qwen2VLConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen)
    config = Qwen2VLConfig(**build.build_config("qwen2-vl-2b", tokenizer))
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (1536, 8960, 28)
    assert (text.num_attention_heads, text.num_key_value_heads, text.vocab_size) == (12, 2, 151936)
    assert (vision.depth, vision.embed_dim, vision.num_heads, vision.hidden_size) == (32, 1280, 16, 1536)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]


def test_bad_preset_and_existing_output(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        build.build_checkpoint(str(tmp_path / "x"), preset="huge")
    with pytest.raises(FileExistsError, match="--overwrite"):
        build.build_checkpoint(str(tmp_path), preset="tiny")
    assert build.main(["--out", str(tmp_path)]) == 2
