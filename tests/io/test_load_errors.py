"""Bad input gets one clear message naming what is wrong; a failed save leaves nothing half-written."""

import json

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file

import lmforge
from lmforge.assets import asset_path
from lmforge.cli import main
from lmforge.errors import LMForgeError


@pytest.fixture
def tiny_dir(tmp_path):
    cfg = tf.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        vocab_size=50,
    )
    tf.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


@pytest.mark.parametrize("name", ["gpt2", "meta-llama/Llama-3.2-1B"])
def test_hub_name_explains_offline_and_local_path(name):
    with pytest.raises(LMForgeError, match=r"never downloads.*lmforge\.load\('/path/to/"):
        lmforge.load(name)


def test_missing_path():
    with pytest.raises(LMForgeError, match="no such file or directory: ./nowhere"):
        lmforge.load("./nowhere")


def test_unknown_architecture_lists_supported(tiny_dir):
    cfg = json.loads((tiny_dir / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (tiny_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        LMForgeError, match="unsupported architecture 'mamba'.*llama, qwen2, mistral, gpt2, bert"
    ):
        lmforge.load(tiny_dir)


def test_missing_weights(tiny_dir):
    (tiny_dir / "model.safetensors").unlink()
    with pytest.raises(LMForgeError, match="no weights found"):
        lmforge.load(tiny_dir)


def test_truncated_weights_name_the_file(tiny_dir):
    path = tiny_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LMForgeError, match="model.safetensors"):
        lmforge.load(tiny_dir)


def test_corrupt_weights_name_the_file(tiny_dir):
    (tiny_dir / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(LMForgeError, match="model.safetensors: corrupt or truncated"):
        lmforge.load(tiny_dir)


def test_wrong_shape_names_tensor_and_shapes(tiny_dir):
    path = tiny_dir / "model.safetensors"
    state = load_file(path)
    state["model.norm.weight"] = torch.ones(31)
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(LMForgeError, match=r"'norm.weight' has shape \(31,\), the config expects \(32,\)"):
        lmforge.load(tiny_dir)


def test_missing_tensor_is_named(tiny_dir):
    path = tiny_dir / "model.safetensors"
    state = load_file(path)
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(LMForgeError, match="model.layers.1.mlp.up_proj.weight' is missing"):
        lmforge.load(tiny_dir)


def test_truncated_gguf_names_the_file(tmp_path):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(asset_path("smollm2").read_bytes()[:100_000])
    with pytest.raises(LMForgeError, match="cut.gguf"):
        lmforge.load(bad)


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(LMForgeError, match="x.gguf: not a readable GGUF file"):
        lmforge.load(bad)


def test_failed_save_leaves_previous_checkpoint_intact(tiny_dir, tmp_path):
    lm = lmforge.load(tiny_dir)
    out = tmp_path / "out"
    lm.save(out)
    before = sorted(p.name for p in out.iterdir())

    class Boom:
        def save(self, path):
            raise OSError("disk full")

    lm.tokenizer = Boom()
    with pytest.raises(LMForgeError, match="disk full"):
        lm.save(out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    lmforge.load(out)  # still loads


def test_cli_prints_one_line_error(capsys):
    assert main(["info", "gpt2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmforge: error: 'gpt2' is not a local path")
