"""The real shipped assets: SmolLM2-135M-Instruct (GGUF) against transformers reading the same file,
and all-MiniLM-L6-v2 against sentence-transformers."""

import pytest
import sentence_transformers
import torch
import transformers

import lmforge
from lmforge.assets import asset_path
from lmforge.generate.cache import KVCache

SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Quantum computers use qubits instead of bits.",
    "I love pizza!",
    "Paris is the capital of France.",
    "Berlin ist die Hauptstadt von Deutschland.",
    "東京は日本の首都です。",
    "What time is it?",
    "The stock market fell sharply on Monday after the announcement.",
    "def add(a, b): return a + b",
    "Shall I compare thee to a summer's day?",
    "   leading and trailing spaces   ",
    "UPPERCASE TEXT SHOULD BE LOWERCASED BY THE TOKENIZER",
    "emoji 🎉🚀 and accents café naïve",
    "a",
    "Numbers: 3.14159, 42, 1e-9, and 1,000,000.",
    "The mitochondria is the powerhouse of the cell.",
    "Machine learning models can overfit small datasets. " * 8,
    "¿Dónde está la biblioteca?",
    "Transformers rely on self-attention to mix information across positions.",
]


def test_smollm2_config_from_gguf(smollm2):
    c = smollm2.config
    assert (c.n_layer, c.n_head, c.n_kv_head, c.d_model, c.d_mlp, c.vocab_size) == (
        30,
        9,
        3,
        576,
        1536,
        49152,
    )
    assert c.position == "rope" and c.rope_theta == 100000.0 and c.tie_embeddings
    assert 134e6 < smollm2.model.num_parameters() < 136e6


def test_smollm2_info_kv_cache_matches_an_allocated_cache(smollm2):
    info = smollm2.info()
    cache = KVCache.allocate(smollm2.config, 1, 16, dtype=smollm2.dtype)
    per_token = sum(t.numel() * t.element_size() for t in cache.k + cache.v) / 16
    assert info["kv_cache_kb_per_token"] == round(per_token / 2**10, 2) == 45.0  # 30 layers x 3 kv heads
    assert info["kv_cache_mb_full_context"] == round(per_token * 8192 / 2**20, 1)
    assert info["context_length"] == 8192


@pytest.mark.xdist_group("hf_smollm2")  # share one transformers load per worker
def test_smollm2_logits_match_transformers_on_same_gguf(smollm2, hf_smollm2):
    model, tok = hf_smollm2
    prompt = "The capital of France is Paris, and the capital of Italy is"
    ids = tok(prompt, return_tensors="pt").input_ids
    assert smollm2.tokenizer.encode(prompt) == ids[0].tolist()
    with torch.no_grad():
        expected = model(ids).logits[0]
    got = smollm2.logits(ids[0])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_smollm2_greedy_says_paris(smollm2):
    ids = smollm2.tokenizer.encode("The capital of France is")
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(smollm2.logits(ids)[-1].argmax()))
    assert "Paris" in smollm2.tokenizer.decode(ids)


def test_smollm2_chat_template_from_gguf(smollm2):
    text = smollm2.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nHi<|im_end|>" in text


def test_minilm_embeddings_match_sentence_transformers():
    ref = sentence_transformers.SentenceTransformer(str(asset_path("minilm")), device="cpu")
    expected = torch.as_tensor(ref.encode(SENTENCES, convert_to_numpy=True))
    got = lmforge.load("minilm", device="cpu").embed(SENTENCES)
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=-1)
    assert cosine.min() >= 0.9999, cosine.min()
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5, rtol=0)


def test_convert_gguf_to_dir_loads_in_transformers(smollm2, tmp_path):
    smollm2.save(tmp_path / "smol")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "smol", dtype=torch.float32).eval()
    ids = torch.tensor([smollm2.tokenizer.encode("Hello there, how are")])
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits[0], smollm2.logits(ids[0]), atol=1e-4, rtol=1e-4)
    again = lmforge.load(tmp_path / "smol")
    assert again.tokenizer.encode("Hello there") == smollm2.tokenizer.encode("Hello there")
