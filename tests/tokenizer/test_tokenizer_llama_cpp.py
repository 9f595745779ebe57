"""SmolLM2's tokenizer from the GGUF gives llama.cpp's ids: `llama-tokenize` on the same file is the
oracle where transformers' GGUF tokenizer differs from it (it splits some `\\p{N}` characters, such as
½ and ¼, differently; llama.cpp is what the model was run and converted with).

`make setup` builds `llama-tokenize` with scripts/build_llama_cpp.sh into a cache outside the repo;
without it these tests fail (they do not skip).
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from lmforge.assets import asset_path, shakespeare_files

ROOT = Path(__file__).resolve().parents[2]

TRICKY = {
    "fractions": "vu; ½ + ¼ = ¾, ⅓ cup, ⅞ inch, 1½ hours",
    "superscripts": "x² + y³ = z⁴; 10⁻⁶ m²; H₂O and CO₂; e^{iπ}",
    "numbers": "123456789 1,000.5 3.14159 0042 2024-11-05 1e-10 -17 +4.5% 1234567890123",
    "other digits": "٣٤٥ ४५६ ①②③ Ⅻ ⅷ １２３４ 𝟙𝟚𝟛",
    "cjk": "日本語のテキストです。中文测试，句子！한국어 문장입니다.",
    "emoji": "🎭👩‍👩‍👧 🇫🇷👍🏽 ❤️ 🤖🤖🤖 ☃",
    "spaces": "  Hello  world!\n\n  x  \t\n",
    "space runs": "a" + " " * 17 + "b" + "\t" * 5 + "c   ",
    "newline runs": "\n\n\n\nend\r\n\r\n  \n",
    "leading space": " lead and trailing ",
    "contractions": "don't WON'T I'll we've they're it's Y'ALL'D",
    "accents": "naïve café Ångström façade e\u0301 ǅ ß ẞ",
    "code": 'def f(x):\n    return x**2  # square\n\nif (a != b && c <= 0) { printf("%d\\n", i++); }',
    "json": '{"key": [1, 2.5, null], "nested": {"a": "b\\"c"}}',
    "special-token text": "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "mixed scripts": "Привет мир Γειά σου κόσμε שלום עולם مرحبا",
    "punctuation": "...!!!???---___***   ''\"\" «» — – … ¿¡",
    "url": "https://example.com/path?q=1&r=%20x#frag user@mail.org",
}


@pytest.fixture(scope="module")
def llama_tokenize() -> Path:
    """The `llama-tokenize` binary that scripts/build_llama_cpp.sh builds (the script names its path)."""
    script = ROOT / "scripts" / "build_llama_cpp.sh"
    binary = Path(
        subprocess.run([script, "--path"], capture_output=True, text=True, check=True).stdout.strip()
    )
    if not binary.is_file():
        pytest.fail(
            f"llama.cpp's llama-tokenize (the tokenizer oracle) is not built: expected {binary}; "
            "run `make setup` (or scripts/build_llama_cpp.sh)",
            pytrace=False,
        )
    return binary


def llama_cpp_ids(binary: Path, gguf: Path, text: str, tmp_path: Path, special: bool = False) -> list[int]:
    """llama.cpp's ids for `text`, read from a file verbatim (no escape processing, no BOS); special-token
    text is plain text unless `special` (the same contract as our `encode(text, allow_special=...)`)."""
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes(text.encode("utf-8"))
    cmd = [binary, "-m", gguf, "-f", prompt, "--ids", "--no-bos", "--no-escape", "--log-disable"]
    if not special:  # llama-tokenize parses special-token text by default
        cmd.append("--no-parse-special")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", TRICKY)
def test_smollm2_ids_equal_llama_cpp(name, llama_tokenize, smollm_tok, tmp_path):
    text = TRICKY[name]
    assert smollm_tok.encode(text) == llama_cpp_ids(llama_tokenize, asset_path("smollm2"), text, tmp_path)


def test_special_token_text_is_text_unless_allowed_as_in_llama_cpp(llama_tokenize, smollm_tok, tmp_path):
    text = TRICKY["special-token text"]
    gguf = asset_path("smollm2")
    allowed = smollm_tok.encode(text, allow_special=True)
    assert allowed == llama_cpp_ids(llama_tokenize, gguf, text, tmp_path, special=True)
    assert allowed[:2] == [1, 4093]  # <|im_start|> user: the control token itself
    assert smollm_tok.encode(text) != allowed


def test_smollm2_ids_equal_llama_cpp_on_a_play(llama_tokenize, smollm_tok, tmp_path):
    """A whole play in one call (its indentation, blank-line runs and stage directions), then 40 of its
    lines, spread over the play, each on its own (a line's start is not a mid-text position)."""
    play = shakespeare_files()[2].read_text(encoding="utf-8")
    gguf = asset_path("smollm2")
    assert smollm_tok.encode(play) == llama_cpp_ids(llama_tokenize, gguf, play, tmp_path)
    lines = [line for line in play.splitlines() if line.strip()]
    for line in lines[:: len(lines) // 40][:40]:
        assert smollm_tok.encode(line) == llama_cpp_ids(llama_tokenize, gguf, line, tmp_path), line


def test_transformers_is_not_the_oracle_here(smollm_tok, hf_smollm):
    """Why llama.cpp is needed: on ½ and ¼ transformers' GGUF tokenizer splits the `\\p{N}` run
    differently (3351, 138 for " ½"), while ours gives llama.cpp's 216, 16738 (checked above)."""
    text = "vu; ½ + ¼"
    assert smollm_tok.encode(text) == [102, 101, 43, 216, 16738, 1232, 216, 28151]
    assert hf_smollm.encode(text) == [102, 101, 43, 3351, 138, 1232, 3351, 137]
