"""Tiny random Hugging Face models, saved with save_pretrained, must give the same logits in lmforge;
a directory lmforge saves must load in transformers with the same logits."""

import pytest
import torch
import transformers as tf

import lmforge

VOCAB = 96


def tiny(kind: str):
    common = dict(vocab_size=VOCAB)
    if kind == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64, **common))
    if kind == "llama":
        cfg = tf.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rope_theta=500.0,
            tie_word_embeddings=False,
            **common,
        )
        return tf.LlamaForCausalLM(cfg)
    if kind == "llama-tied":
        cfg = tf.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            **common,
        )
        return tf.LlamaForCausalLM(cfg)
    if kind == "qwen2":
        cfg = tf.Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            **common,
        )
        return tf.Qwen2ForCausalLM(cfg)
    if kind == "mistral":
        cfg = tf.MistralConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            sliding_window=5,
            **common,
        )
        return tf.MistralForCausalLM(cfg)
    if kind == "bert":
        return tf.BertModel(
            tf.BertConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=64,
                **common,
            ),
            add_pooling_layer=False,
        )
    if kind == "bert-mlm":
        return tf.BertForMaskedLM(
            tf.BertConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=64,
                **common,
            )
        )
    raise ValueError(kind)


def randomize(model):
    """Random biases and norm weights too, so a dropped or misplaced one shows up."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def reference_output(model, ids, mask=None):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


KINDS = ["gpt2", "llama", "llama-tied", "qwen2", "mistral", "bert", "bert-mlm"]


@pytest.mark.parametrize("kind", KINDS)
def test_transformers_checkpoint_loads_with_same_logits(kind, tmp_path):
    torch.manual_seed(1)
    ref = randomize(tiny(kind))
    ref.save_pretrained(tmp_path)
    lm = lmforge.load(tmp_path, device="cpu")
    ids = torch.randint(0, VOCAB, (2, 12))
    expected = reference_output(ref, ids)
    with torch.no_grad():
        got = lm.model(ids)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_lmforge_checkpoint_loads_in_transformers(kind, tmp_path):
    ref = randomize(tiny(kind))
    ref.save_pretrained(tmp_path / "hf")
    lm = lmforge.load(tmp_path / "hf", device="cpu")
    lm.save(tmp_path / "ours")
    auto = (
        tf.AutoModelForMaskedLM
        if kind == "bert-mlm"
        else (tf.AutoModel if kind == "bert" else tf.AutoModelForCausalLM)
    )
    back = auto.from_pretrained(tmp_path / "ours").eval()
    ids = torch.randint(0, VOCAB, (2, 12))
    torch.testing.assert_close(reference_output(back, ids), reference_output(ref, ids), atol=1e-4, rtol=1e-4)


def test_bert_padding_mask_matches(tmp_path):
    ref = randomize(tiny("bert"))
    ref.save_pretrained(tmp_path)
    lm = lmforge.load(tmp_path, device="cpu")
    ids = torch.randint(0, VOCAB, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    expected = reference_output(ref, ids, mask)
    with torch.no_grad():
        got = lm.model(ids, attention_mask=mask)
    torch.testing.assert_close(got[0], expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1, :6], expected[1, :6], atol=1e-4, rtol=1e-4)


def test_left_padded_decoder_matches_unpadded(tmp_path):
    ref = randomize(tiny("llama"))
    ref.save_pretrained(tmp_path)
    lm = lmforge.load(tmp_path, device="cpu")
    ids = torch.randint(0, VOCAB, (1, 7))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.tensor([[0, 0, 0] + [1] * 7])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = lm.model(ids)
        got = lm.model(padded, positions=positions, attention_mask=mask)
    torch.testing.assert_close(got[:, 3:], plain, atol=1e-5, rtol=1e-5)


def test_sharded_safetensors_load(tmp_path):
    ref = randomize(tiny("llama"))
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    lm = lmforge.load(tmp_path, device="cpu")
    ids = torch.randint(0, VOCAB, (1, 9))
    torch.testing.assert_close(lm.model(ids), reference_output(ref, ids), atol=1e-4, rtol=1e-4)


def test_pytorch_bin_loads_weights_only(tmp_path):
    ref = randomize(tiny("gpt2"))
    ref.config.save_pretrained(tmp_path)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    lm = lmforge.load(tmp_path, device="cpu")
    ids = torch.randint(0, VOCAB, (1, 9))
    torch.testing.assert_close(lm.model(ids), reference_output(ref, ids), atol=1e-4, rtol=1e-4)


def test_pickled_code_in_bin_is_refused(tmp_path):
    ref = tiny("gpt2")
    ref.config.save_pretrained(tmp_path)
    torch.save({"weights": ref.state_dict(), "evil": Exploit()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(lmforge.LMForgeError, match="cannot load safely as weights only"):
        lmforge.load(tmp_path, device="cpu")


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))
