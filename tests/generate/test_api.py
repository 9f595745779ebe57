"""The public API: generate / stream / chat over every strategy, streaming text equal to the final text
(emoji and CJK split over byte tokens included), log-probabilities, and bad input refused in one line
before any model work."""

from __future__ import annotations

import math

import pytest
import torch
from generate_helpers import ByteTokenizer, ScriptedModel, tiny_lm, tiny_model

from lmforge.errors import LMForgeError
from lmforge.generate import Completion, chat, generate, stream

EOS = ByteTokenizer.eos_token_id
STRATEGIES = {
    "greedy": {},
    "sample": dict(do_sample=True, seed=0),
    "beam": dict(num_beams=3),
    "contrastive_search": dict(penalty_alpha=0.6, top_k=4),
    "contrastive_decoding": dict(contrastive_alpha=0.1, amateur=True),
    "speculative_draft": dict(draft=True),
    "speculative_sampled": dict(draft=True, do_sample=True, seed=1),
    "prompt_lookup": dict(prompt_lookup=True),
}


def strategy_options(name: str) -> dict:
    options = dict(STRATEGIES[name])
    if options.pop("amateur", False):
        options["amateur"] = tiny_lm(tiny_model("llama", seed=5, scale=20.0, n_layer=1))
    if options.pop("draft", False):
        options["draft"] = tiny_lm(tiny_model("llama", seed=6, scale=20.0, n_layer=1))
    return options


def test_single_prompt_gives_a_completion_and_batches_give_lists():
    lm = tiny_lm()
    one = generate(lm, "Hello", max_new_tokens=8)
    assert isinstance(one, Completion)
    assert one.prompt_tokens == 6  # BOS + 5 bytes
    assert len(one.token_ids) <= 8 and one.finish_reason in ("stop", "length")
    many = generate(lm, ["Hello", "a much longer prompt"], max_new_tokens=8)
    assert [c.index for c in many] == [0, 1]
    assert many[0].token_ids == one.token_ids  # batching (with left padding) changes nothing
    assert many[1].token_ids == generate(lm, "a much longer prompt", max_new_tokens=8).token_ids


def test_token_id_prompts_and_lm_methods():
    lm = tiny_lm()
    ids = ByteTokenizer().encode("Hello", add_special_tokens=True)
    assert generate(lm, ids, max_new_tokens=5).token_ids == lm.generate("Hello", max_new_tokens=5).token_ids
    assert (
        "".join(d.text for d in lm.stream("Hello", max_new_tokens=5))
        == lm.generate("Hello", max_new_tokens=5).text
    )


def test_seeded_sampling_is_reproducible_and_returns_n_sequences():
    lm = tiny_lm(tiny_model("llama", seed=0, scale=3.0))
    a = generate(lm, ["x", "yy"], do_sample=True, seed=7, num_return_sequences=3, max_new_tokens=10)
    b = generate(lm, ["x", "yy"], do_sample=True, seed=7, num_return_sequences=3, max_new_tokens=10)
    c = generate(lm, ["x", "yy"], do_sample=True, seed=8, num_return_sequences=3, max_new_tokens=10)
    assert [x.index for x in a] == [0, 0, 0, 1, 1, 1]
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    assert len({tuple(x.token_ids) for x in a[:3]}) > 1  # the samples of one prompt differ


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_honours_the_processor_pipeline(name):
    """The same options mean the same thing under every strategy: allowed tokens, a banning logit bias
    and min_new_tokens (EOS held back) together leave exactly one possible output."""
    lm = tiny_lm()
    allowed = list(b"abcxyz")
    out = generate(lm, "abc abc", max_new_tokens=12, allowed_token_ids=allowed, **strategy_options(name))
    out = out if isinstance(out, list) else [out]
    for completion in out:
        assert set(completion.token_ids) <= set(allowed) | {EOS}
        assert len(completion.token_ids) >= 1
    bans = {t: -math.inf for t in b"abcxy"}
    only_z = generate(
        lm,
        "abc abc",
        max_new_tokens=6,
        min_new_tokens=6,
        allowed_token_ids=allowed,
        logit_bias=bans,
        **strategy_options(name),
    )
    only_z = only_z if isinstance(only_z, list) else [only_z]
    assert all(c.text == "zzzzzz" for c in only_z)


@pytest.mark.parametrize(
    "name", ["greedy", "sample", "contrastive_search", "speculative_draft", "prompt_lookup"]
)
def test_streamed_text_equals_generated_text(name):
    lm = tiny_lm(tiny_model("llama", seed=2, scale=4.0))
    options = dict(max_new_tokens=24, **strategy_options(name))
    final = generate(lm, "Once upon", **options)
    deltas = list(stream(lm, "Once upon", **options))
    assert "".join(d.text for d in deltas) == final.text
    assert [t for d in deltas for t in d.token_ids] == final.token_ids
    assert deltas[-1].finish_reason == final.finish_reason
    for _ in stream(lm, "Once upon", **options):  # the caller's code never runs in inference mode
        assert not torch.is_inference_mode_enabled()


SCRIPT = "Hi 🙂 你好, naïve 𝄞 ok!"


def scripted_lm():
    prompt = ByteTokenizer().encode("Say it:", add_special_tokens=True)
    return tiny_lm(ScriptedModel(SCRIPT, len(prompt))), "Say it:"


def test_stream_emits_whole_characters_for_emoji_and_cjk():
    lm, prompt = scripted_lm()
    deltas = list(stream(lm, prompt, max_new_tokens=64))
    assert "".join(d.text for d in deltas) == SCRIPT == generate(lm, prompt, max_new_tokens=64).text
    assert all("\ufffd" not in d.text for d in deltas)  # no half-decoded bytes
    assert any(d.text == "" for d in deltas)  # continuation bytes of a character produce no text yet
    assert "🙂" in [d.text for d in deltas] and deltas[-1].finish_reason == "stop"


def test_stop_string_is_cut_in_final_and_streamed_text():
    lm, prompt = scripted_lm()
    final = generate(lm, prompt, max_new_tokens=64, stop=["naïve"])
    assert final.text == "Hi 🙂 你好, " and final.finish_reason == "stop"
    assert "".join(d.text for d in stream(lm, prompt, max_new_tokens=64, stop=["naïve"])) == final.text
    assert generate(lm, prompt, max_new_tokens=5).finish_reason == "length"


def test_logprobs_are_the_model_distribution():
    model = tiny_model("gpt2", seed=3, scale=4.0)
    lm = tiny_lm(model)
    out = generate(lm, "abc", max_new_tokens=6, logprobs=True, top_logprobs=3)
    ids = ByteTokenizer().encode("abc", add_special_tokens=True)
    with torch.no_grad():
        for i, token in enumerate(out.token_ids):
            logp = torch.log_softmax(model(torch.tensor([ids + out.token_ids[:i]]))[0, -1], -1)
            assert math.isclose(out.logprobs[i], float(logp[token]), abs_tol=1e-4)
            top = torch.topk(logp, 3)
            assert list(out.top_logprobs[i]) == top.indices.tolist()
    deltas = list(stream(lm, "abc", max_new_tokens=6, logprobs=True, top_logprobs=3))
    assert [lp for d in deltas for lp in d.logprobs] == pytest.approx(out.logprobs)


def test_chat_uses_the_chat_template():
    lm = tiny_lm()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    expected = generate(lm, list(ByteTokenizer().apply_chat_template(messages).encode()), max_new_tokens=6)
    assert chat(lm, messages, max_new_tokens=6).token_ids == expected.token_ids
    assert "".join(d.text for d in chat(lm, messages, stream=True, max_new_tokens=6)) == expected.text


class CountingModel(torch.nn.Module):
    """Wraps a model and counts forwards: bad input must fail before the first one."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config, self.calls = model, model.config, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(top_p=1.5), "top_p"),
        (dict(temperature=-1.0), "temperature"),
        (dict(logit_bias={999: 1.0}), "logit_bias"),
        (dict(stop_token_ids=[5000]), "stop_token_ids"),
        (dict(max_new_tokens=500), "max_new_tokens"),
        (dict(max_new_tokens=100), "truncate_prompt"),
        (dict(num_return_sequences=2), "do_sample"),
        (dict(tempreature=0.5), "unknown option.*tempreature"),
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
        (dict(num_beams=2, penalty_alpha=0.5, top_k=3), "one decoding strategy"),
        (dict(penalty_alpha=0.5), "top_k"),
        (dict(draft="other"), "different tokenizer"),
        (dict(amateur="other"), "different tokenizer"),
        (dict(draft="short"), "draft model's context"),
    ],
)
def test_bad_input_fails_in_one_line_before_any_work(options, message):
    counting = CountingModel(tiny_model("llama", max_seq_len=128))
    lm = tiny_lm(counting)
    if options.get("draft") == "other" or options.get("amateur") == "other":
        key = "draft" if "draft" in options else "amateur"
        options[key] = tiny_lm(tiny_model("llama"), tokenizer=ByteTokenizer(tag="another vocabulary"))
    if options.get("draft") == "short":
        options["draft"] = tiny_lm(tiny_model("llama", max_seq_len=32))
    options.setdefault("max_new_tokens", 8)
    prompt = "x" * 60
    with pytest.raises(LMForgeError, match=message) as info:
        generate(lm, prompt, **options)
    assert "\n" not in str(info.value)
    assert counting.calls == 0


def test_truncate_prompt_keeps_the_last_tokens():
    lm = tiny_lm(tiny_model("llama", max_seq_len=64, scale=20.0))
    long = "y" * 100
    out = generate(lm, long, max_new_tokens=10, truncate_prompt=True)
    assert out.prompt_tokens == 54
    assert out.token_ids == generate(lm, list(b"y" * 54), max_new_tokens=10).token_ids


def test_beam_search_cannot_stream():
    with pytest.raises(LMForgeError, match="beam search cannot stream"):
        stream(tiny_lm(), "hi", num_beams=2)


def test_empty_prompt_list_and_empty_prompt_are_refused():
    with pytest.raises(LMForgeError, match="no prompts"):
        generate(tiny_lm(), [])
    with pytest.raises(LMForgeError, match="empty"):
        generate(tiny_lm(), [[], [1, 2]], max_new_tokens=3)  # a batch whose first prompt has no tokens


def test_calls_share_the_lms_engine_and_say_which_decode_step_ran():
    lm = tiny_lm()
    engine = lm.engine
    one = lm.generate("Hello", max_new_tokens=5, ignore_eos=True)
    two = generate(lm, ["Hello", "Hi"], max_new_tokens=5, ignore_eos=True)
    deltas = list(
        chat(lm, [{"role": "user", "content": "Hi"}], stream=True, max_new_tokens=5, ignore_eos=True)
    )
    assert lm.engine is engine and engine.step_counts == {"eager": 3 * 4}
    assert one.decode_step == "eager" and {c.decode_step for c in two} == {"eager"}
    assert deltas[-1].decode_step == "eager" and {d.decode_step for d in deltas[:-1]} == {None}
    assert generate(lm, "Hello", max_new_tokens=1).decode_step == "none"  # only the prompt ran
    lm.model = tiny_model("llama", seed=1)
    assert lm.engine is not engine and lm.engine.model is lm.model


def test_draft_and_amateur_lms_run_on_their_own_engines():
    lm = tiny_lm()
    helper = tiny_lm(tiny_model("llama", seed=6, scale=20.0, n_layer=1))
    generate(lm, "Hello", draft=helper, max_new_tokens=8, ignore_eos=True)
    drafted = sum(helper.engine.step_counts.values())
    assert drafted > 0
    generate(lm, "Hello", amateur=helper, max_new_tokens=8, ignore_eos=True)
    assert sum(helper.engine.step_counts.values()) == drafted + 7


def test_unknown_compile_mode_is_refused():
    import lmforge

    with pytest.raises(LMForgeError, match="unknown compile mode 'fast'"):
        lmforge.load("smollm2", compile="fast")
    with pytest.raises(LMForgeError, match="unknown compile mode"):
        tiny_lm(compile=True)
