"""`lmforge generate` and `lmforge chat` on a tiny saved checkpoint: every GenerationConfig field is an
option, outputs equal the API's, errors are one line, and the chat loop keeps history and obeys
/system, /reset, /exit and multi-line input."""

from __future__ import annotations

import dataclasses
import json

import pytest
from generate_helpers import tiny_checkpoint, tiny_lm

import lmforge
from lmforge.cli import build_parser, main, run
from lmforge.cli.generate import chat_loop, read_message
from lmforge.generate import generate
from lmforge.generate.config import GenerationConfig


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


def test_every_generation_option_is_a_cli_option():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    for command in ("generate", "chat"):
        dests = {a.dest for a in sub[command]._actions}
        missing = {f.name for f in dataclasses.fields(GenerationConfig)} - dests
        assert not missing, f"{command} lacks {missing}"


def test_generate_command_matches_the_api(checkpoint, capsys):
    run(
        [
            "generate",
            "--model",
            str(checkpoint),
            "--prompt",
            "hello world",
            "how are",
            "--max-new-tokens",
            "6",
            "--json-output",
            "--repetition-penalty",
            "1.3",
        ]
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    lm = lmforge.load(checkpoint)
    expected = generate(lm, ["hello world", "how are"], max_new_tokens=6, repetition_penalty=1.3)
    assert [r["token_ids"] for r in records] == [c.token_ids for c in expected]
    assert [r["text"] for r in records] == [c.text for c in expected]


def test_stream_and_chat_template_options(checkpoint, capsys):
    run(
        [
            "generate",
            "--model",
            str(checkpoint),
            "--prompt",
            "hello",
            "--max-new-tokens",
            "8",
            "--stream",
            "--chat-template",
            "--do-sample",
            "--seed",
            "3",
            "--top-k",
            "20",
        ]
    )
    streamed = capsys.readouterr().out
    lm = lmforge.load(checkpoint)
    expected = lm.chat(
        [{"role": "user", "content": "hello"}], max_new_tokens=8, do_sample=True, seed=3, top_k=20
    )
    assert streamed == expected.text + "\n"


def test_bad_option_is_a_one_line_error(checkpoint, capsys):
    code = main(["generate", "--model", str(checkpoint), "--prompt", "hi", "--top-p", "1.5"])
    err = capsys.readouterr().err
    assert code == 2 and "top_p" in err and err.count("\n") == 1


def test_read_message_joins_continued_lines_and_blocks():
    lines = iter(["first\\", "second", '"""', "a", "b", '"""', '"""one line"""'])
    read = lambda prompt: next(lines)
    assert read_message(read) == "first\nsecond"
    assert read_message(read) == "a\nb"
    assert read_message(read) == "one line"


def test_chat_loop_keeps_history_and_obeys_commands():
    lm = tiny_lm()
    script = iter(["/system You are terse.", "hello\\", "there", "/reset", "again", "/exit"])
    out: list[str] = []
    history = chat_loop(lm, read_line=lambda p: next(script), write=out.append, max_new_tokens=4)
    assert [m["role"] for m in history] == ["system", "user", "assistant"]
    assert history[0]["content"] == "You are terse." and history[1]["content"] == "again"
    text = "".join(out)
    assert "conversation reset" in text and "system prompt set" in text
    # the answer shown is the one the API gives for the same conversation
    expected = lm.chat(history[:2], max_new_tokens=4).text
    assert history[2]["content"] == expected


def test_chat_loop_ends_at_end_of_input():
    def eof(prompt):
        raise EOFError

    assert chat_loop(tiny_lm(), read_line=eof, write=lambda s: None) == []


# --- a typed value wins over the checkpoint's generation_config.json, even when it equals the default ---


@pytest.fixture(scope="module")
def sampling_checkpoint(checkpoint, tmp_path_factory):
    """The tiny checkpoint with room for 128 new tokens and a generation_config.json that samples hot
    and stops after 5 tokens (what the CLI must not let override a typed option)."""
    from generate_helpers import tiny_model

    from lmforge.lm import LM

    base = lmforge.load(checkpoint)
    model = tiny_model("llama", seed=0, scale=8.0, vocab_size=base.config.vocab_size, max_seq_len=256)
    defaults = {"do_sample": True, "temperature": 1.5, "max_new_tokens": 5}
    return LM(model, base.tokenizer, defaults).save(tmp_path_factory.mktemp("sampling") / "ckpt")


def _cli_tokens(path, capsys, *flags) -> list[int]:
    run(["generate", "--model", str(path), "--prompt", "hello", "--json-output", "--ignore-eos", *flags])
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return record["token_ids"]


def test_typed_no_do_sample_overrides_the_checkpoint(sampling_checkpoint, capsys):
    lm = lmforge.load(sampling_checkpoint)
    greedy = lm.generate("hello", do_sample=False, ignore_eos=True).token_ids
    assert _cli_tokens(sampling_checkpoint, capsys, "--no-do-sample", "--seed", "1") == greedy
    assert _cli_tokens(sampling_checkpoint, capsys, "--no-do-sample", "--seed", "2") == greedy
    # without the flag the checkpoint samples: two seeds, two continuations
    hot = [_cli_tokens(sampling_checkpoint, capsys, "--seed", s) for s in ("1", "2")]
    assert hot[0] != hot[1]


def test_typed_temperature_one_overrides_the_checkpoint(sampling_checkpoint, capsys):
    lm = lmforge.load(sampling_checkpoint)
    cool = lm.generate("hello", temperature=1.0, seed=3, ignore_eos=True).token_ids
    hot = lm.generate("hello", seed=3, ignore_eos=True).token_ids  # the checkpoint's 1.5
    assert cool != hot
    assert _cli_tokens(sampling_checkpoint, capsys, "--temperature", "1.0", "--seed", "3") == cool
    assert _cli_tokens(sampling_checkpoint, capsys, "--seed", "3") == hot


def test_typed_max_new_tokens_128_overrides_the_checkpoint(sampling_checkpoint, capsys):
    assert len(_cli_tokens(sampling_checkpoint, capsys, "--max-new-tokens", "128")) == 128
    assert len(_cli_tokens(sampling_checkpoint, capsys)) == 5  # the checkpoint's own limit


def test_chat_keeps_the_models_own_max_new_tokens(sampling_checkpoint, monkeypatch):
    import lmforge.cli.generate as command

    received = {}
    monkeypatch.setattr(command, "chat_loop", lambda lm, system=None, **options: received.update(options))
    command.chat_command(model=str(sampling_checkpoint))
    assert "max_new_tokens" not in received  # the checkpoint says 5: the chat command adds nothing
    command.chat_command(model=str(sampling_checkpoint), max_new_tokens=128)
    assert received["max_new_tokens"] == 128
