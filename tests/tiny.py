"""The tiny model every test folder shares: 2 layers, 32 wide, random weights, so model, generation,
training and evaluation tests run in milliseconds without downloading anything.

Each family starts from its preset (`llama-tiny`, `gpt-tiny`, `bert-tiny`: the family's norm, MLP,
position, bias and head fields) shrunk to the same sizes; a test's variant is an override:
`tiny_config("llama", sliding_window=4)`, `tiny_model("gpt2", seed=1, vocab_size=320)`.

Import it from any test folder (`from tiny import tiny_config, tiny_model`): pytest imports
tests/conftest.py with tests/ put on sys.path (its default "prepend" import mode), so this module is
importable everywhere; tests/conftest.py also offers both as fixtures of the same names.
"""

from __future__ import annotations

from lmforge.config import ModelConfig
from lmforge.model import Transformer
from lmforge.tokenizer import Tokenizer

PRESET = {"llama": "llama-tiny", "gpt2": "gpt-tiny", "bert": "bert-tiny"}
SIZES = dict(n_layer=2, n_head=4, d_model=32, max_seq_len=128)
FAMILY_SIZES = {"llama": dict(n_kv_head=2, d_mlp=64)}  # GQA kept; MLP width scaled down with d_model


def tiny_config(family: str = "llama", vocab_size: int = 259, **overrides) -> ModelConfig:
    """A 2-layer, 32-wide config of `family` (llama: RoPE/RMSNorm/SwiGLU/GQA; gpt2: learned positions,
    LayerNorm, GELU, biases; bert: bidirectional post-norm MLM encoder); 259 = 256 bytes + 3 specials."""
    if family not in PRESET:
        raise ValueError(f"tiny_config: family is one of {sorted(PRESET)}, not {family!r}")
    sizes = {**SIZES, **FAMILY_SIZES.get(family, {})}
    return ModelConfig.preset(PRESET[family], vocab_size=vocab_size, **{**sizes, **overrides})


def tiny_model(family: str = "llama", seed: int = 0, **overrides) -> Transformer:
    """`Transformer(tiny_config(family, **overrides))` with seeded random weights, in eval mode."""
    model = Transformer(tiny_config(family, **overrides))
    model.init_weights(seed=seed)
    return model.eval()


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_chat_tokenizer(texts: list[str], vocab_size: int = 320) -> Tokenizer:
    """A small byte-level BPE trained on `texts` (x20), with <|endoftext|> (BOS, PAD), <|im_start|> and
    <|im_end|> (EOS) and a ChatML template: what checkpoints saved by the tests carry."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts) * 20, trainer)
    specials = {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    return Tokenizer(backend, specials, chat_template=CHAT_TEMPLATE)
