"""The `inputs_embeds` path: a prefix of input vectors in front of the token ids, in the model and in
the engine. The oracle: vectors equal to the token embeddings of some ids must give what those ids give
(logits, greedy generation with the KV cache, and greedy decoding without a cache)."""

import pytest
import torch
from generate_helpers import ByteTokenizer

from lmforge import LM, LMForgeError
from lmforge.generate import generate
from tiny import tiny_model

PREFIX = [72, 101, 108, 108, 111]  # "Hello"
PROMPT = [32, 119, 111]  # " wo"


class IdsAsImage(LM):
    """A text model whose "image" is a tensor of token ids, standing in as their token embeddings."""

    def image_prefix(self, images):
        ids = torch.stack(images)  # (B, P)
        return self.model.tok_emb(ids)  # (B, P, C)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_forward_with_prefix_embeds_equals_ids(family):
    model = tiny_model(family)
    ids = torch.tensor([PREFIX + PROMPT])
    with torch.no_grad():
        ref = model(ids)
        prefix = model.tok_emb(torch.tensor([PREFIX]))
        out = model(torch.tensor([PROMPT]), inputs_embeds=prefix)
        only = model(None, inputs_embeds=model.tok_emb(ids))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(only, ref)


def no_cache_greedy(model, prefix: torch.Tensor, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding that reruns the whole sequence (prefix vectors + ids) every step: no KV cache."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids]), inputs_embeds=prefix)[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_engine_prefix_embeds_generates_like_ids(family):
    lm = IdsAsImage(tiny_model(family, seed=3), ByteTokenizer(), compile="eager")
    opts = dict(max_new_tokens=12, ignore_eos=True)
    ref = generate(lm, PREFIX + PROMPT, **opts)
    out = generate(lm, PROMPT, image=torch.tensor(PREFIX), **opts)
    assert out.token_ids == ref.token_ids
    assert out.prompt_tokens == len(PREFIX) + len(PROMPT)
    prefix = lm.model.tok_emb(torch.tensor([PREFIX])).detach()
    assert no_cache_greedy(lm.model, prefix, PROMPT, 12) == ref.token_ids


def test_engine_prefix_embeds_in_a_padded_batch_and_beam():
    """Rows of different lengths (left padding moves each row's prefix) and beam search."""
    lm = IdsAsImage(tiny_model("llama", seed=4), ByteTokenizer(), compile="eager")
    other = [1, 2, 3, 4, 5]
    prompts = [PROMPT, [40] + PROMPT + [41, 42]]
    images = [PREFIX, other]
    outs = generate(lm, prompts, image=[torch.tensor(i) for i in images], max_new_tokens=8, ignore_eos=True)
    refs = [generate(lm, i + p, max_new_tokens=8, ignore_eos=True) for i, p in zip(images, prompts)]
    assert [o.token_ids for o in outs] == [r.token_ids for r in refs]
    beam = generate(lm, PROMPT, image=torch.tensor(PREFIX), num_beams=3, max_new_tokens=6, ignore_eos=True)
    beam_ref = generate(lm, PREFIX + PROMPT, num_beams=3, max_new_tokens=6, ignore_eos=True)
    assert beam.token_ids == beam_ref.token_ids


def test_text_only_model_refuses_an_image():
    lm = LM(tiny_model("llama"), ByteTokenizer(), source="tiny", compile="eager")
    with pytest.raises(LMForgeError, match="text-only model"):
        generate(lm, PROMPT, image=torch.tensor(PREFIX), max_new_tokens=2)
