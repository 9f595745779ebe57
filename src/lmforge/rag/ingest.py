"""Read documents: .txt, .md, .html, .jsonl (one document a line, text in a field), folders of them,
and the built-in corpora (`shakespeare`: the plays; `wikipedia`: the English Wikipedia excerpt in
gensim's test data, 101 articles cut to their first 4,000 characters, one document per section, so a
query must find the passage, not just the article).

A document's id is a hash of its text; its *path* (relative to the folder that was indexed, or the
file name given) is what re-indexing matches on: same path and hash → unchanged, same path and another
hash → replaced, a path no longer present → deleted. Unreadable and binary files are skipped and
listed, never fatal.
"""

from __future__ import annotations

import bz2
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from lmforge.errors import LMForgeError

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
HTML_SUFFIXES = {".html", ".htm"}
SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {".jsonl"}
BUILTIN = ("shakespeare", "wikipedia")


@dataclass
class Document:
    path: str  # what re-indexing matches on (relative to `root`)
    text: str
    title: str = ""
    root: str = ""  # the folder (or built-in corpus) it was indexed from
    source: str = ""  # absolute file path (`file.jsonl#line` for a jsonl record)
    mtime: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return content_hash(self.text)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class Skipped:
    path: str
    reason: str


class _HTMLText(HTMLParser):
    """HTML to text, headings written as Markdown headings so chunking sees the sections."""

    BLOCK = {"p", "div", "li", "br", "tr", "section", "article", "pre", "blockquote", "table", "ul", "ol"}
    SKIP = {"script", "style", "head", "noscript"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        if tag == "title":
            self._in_title = False
        if re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(raw: str) -> tuple[str, str]:
    parser = _HTMLText()
    parser.feed(raw)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return text, parser.title.strip()


def _title_of(text: str, fallback: str) -> str:
    for line in text.splitlines()[:20]:
        match = re.match(r"#{1,6}\s+(.+)", line.strip())
        if match:
            return match.group(1).strip()
    return fallback


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise ValueError("binary file (NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_file(path: Path, rel: str, root: str, text_field: str = "text") -> list[Document]:
    """The documents in one file (several for .jsonl); ValueError/OSError when it cannot be read."""
    raw = _read_text(path)
    mtime = path.stat().st_mtime
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        docs = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {n} is not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise ValueError(f"line {n} has no string field '{text_field}' (set --field)")
            key = str(record.get("id", n))
            meta = {k: v for k, v in record.items() if k != text_field and isinstance(v, (str, int, float))}
            docs.append(
                Document(
                    path=f"{rel}#{key}",
                    text=record[text_field],
                    title=str(record.get("title", key)),
                    root=root,
                    source=f"{path}#{key}",
                    mtime=mtime,
                    meta=meta,
                )
            )
        return docs
    if suffix in HTML_SUFFIXES:
        text, title = html_to_text(raw)
        title = title or _title_of(text, path.stem)
    else:
        text, title = raw, _title_of(raw, path.stem)
    return [Document(rel, text, title, root, str(path), mtime)]


def read_documents(
    paths: list[str | Path], text_field: str = "text"
) -> tuple[list[Document], list[Skipped], list[str]]:
    """Documents under `paths` (files, folders, built-in corpus names), the files skipped with the
    reason, and the roots that were read (a folder's documents are relative to it)."""
    if not paths:
        raise LMForgeError(
            "nothing to index: give files, folders, or a built-in corpus (shakespeare, wikipedia)"
        )
    docs: list[Document] = []
    skipped: list[Skipped] = []
    roots: list[str] = []
    for item in paths:
        p = Path(item)
        if not p.exists() and str(item) in BUILTIN:
            corpus = builtin_corpus(str(item))
            docs.extend(corpus)
            roots.append(str(item))
            continue
        if not p.exists():
            raise LMForgeError(f"{item}: no such file or folder (built-in corpora: {', '.join(BUILTIN)})")
        p = p.resolve()
        if p.is_dir():
            root, files = p, sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            roots.append(str(p))
        else:
            root, files = p.parent, [p]
        for f in files:
            rel = f.relative_to(root).as_posix()
            if f.suffix.lower() not in SUFFIXES:
                skipped.append(Skipped(str(f), f"unsupported type '{f.suffix or 'none'}'"))
                continue
            try:
                docs.extend(read_file(f, rel, str(root), text_field))
            except (OSError, ValueError) as exc:
                skipped.append(Skipped(str(f), str(exc)))
    return docs, skipped, roots


# --- built-in corpora ---------------------------------------------------------------------------------


def builtin_corpus(name: str) -> list[Document]:
    if name == "shakespeare":
        from lmforge.assets import shakespeare_files

        return [
            Document(f"shakespeare/{f.name}", f.read_text("utf-8"), f.stem, "shakespeare", str(f), 0.0)
            for f in shakespeare_files()
        ]
    if name == "wikipedia":
        docs = []
        for title, text in wikipedia_articles():
            for i, (section, body) in enumerate(wikipedia_sections(text)):
                name = f"{i:02d}-{slug(section) or 'lead'}.md"
                head = f"# {title}" + (f": {section}" if section else "")
                doc = Document(f"wikipedia/{slug(title)}/{name}", f"{head}\n\n{body}\n", title, "wikipedia")
                doc.source, doc.meta = "gensim:enwiki-excerpt", {"section": section or "lead"}
                docs.append(doc)
        return docs
    raise LMForgeError(f"unknown built-in corpus '{name}'; known: {', '.join(BUILTIN)}")


def slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", title).strip("_")


WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def wikipedia_path() -> Path:
    """The English Wikipedia excerpt that ships in gensim's test data (found without importing gensim)."""
    import importlib.util

    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise LMForgeError("the wikipedia corpus needs the gensim package (its test data holds the excerpt)")
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data" / WIKI_FILE
    if not path.exists():
        raise LMForgeError(f"the Wikipedia excerpt is missing from gensim's test data: {path}")
    return path


def wikipedia_articles(
    max_chars: int = 4000, min_chars: int = 1500, limit: int | None = None
) -> list[tuple[str, str]]:
    """(title, Markdown text) of the excerpt's articles (the first `limit` of them): redirects and
    stubs left out, wiki markup reduced to text with `## Section` headings, each cut to its first
    `max_chars` at a paragraph end (the lead and first sections: a corpus small enough to embed on a CPU
    in about a minute)."""
    import xml.etree.ElementTree as ET

    out = []
    with bz2.open(wikipedia_path(), "rb") as f:
        for _, elem in ET.iterparse(f):
            if not elem.tag.endswith("}page"):
                continue
            ns = elem.tag[: -len("page")]
            title = elem.findtext(f"{ns}title") or ""
            text = elem.findtext(f"{ns}revision/{ns}text") or ""
            elem.clear()
            if text.lstrip().upper().startswith("#REDIRECT") or ":" in title:
                continue
            body = wiki_to_markdown(text)
            if len(body) < min_chars:
                continue
            if len(body) > max_chars:
                cut = body.rfind("\n\n", 0, max_chars)
                body = body[: cut if cut > max_chars // 2 else max_chars]
            out.append((title, f"# {title}\n\n{body.strip()}\n"))
            if len(out) == limit:
                break
    return out


def wikipedia_sections(text: str, min_chars: int = 300) -> list[tuple[str, str]]:
    """(section title, body) of an article's Markdown: the lead ("") and each `##` section; a section
    shorter than `min_chars` is merged into the one before it."""
    body = text.split("\n", 1)[1] if text.startswith("# ") else text
    parts: list[tuple[str, str]] = []
    title, lines = "", []
    for line in body.splitlines():
        match = re.match(r"#{2,6}\s+(.+)", line)
        if match and parts is not None:
            parts.append((title, "\n".join(lines).strip()))
            title, lines = match.group(1).strip(), []
        else:
            lines.append(line)
    parts.append((title, "\n".join(lines).strip()))
    out: list[tuple[str, str]] = []
    for t, b in parts:
        if out and len(b) < min_chars:
            out[-1] = (out[-1][0], f"{out[-1][1]}\n\n{'## ' + t if t else ''}\n{b}".strip())
        elif b:
            out.append((t, b))
    return out


def wiki_to_markdown(text: str) -> str:
    """Wiki markup to plain Markdown-ish text (templates, tables, refs, files and links resolved)."""
    text = html.unescape(text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<ref[^>/]*/>", "", text)
    text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
    for _ in range(4):  # nested templates and tables, innermost first
        text = re.sub(r"\{\{[^{}]*\}\}", "", text)
        text = re.sub(r"\{\|[^{}]*?\|\}", "", text, flags=re.S)
    text = re.sub(
        r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", "", text, flags=re.I
    )
    text = re.sub(r"\[\[[a-z\-]{2,12}:[^\]]*\]\]", "", text)  # interlanguage links
    text = re.sub(r"\[\[([^\]|]*)\|([^\]]*)\]\]", r"\2", text)
    text = re.sub(r"\[\[([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[https?://\S+\]", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(
        r"^(=+)\s*(.*?)\s*\1\s*$",
        lambda m: "#" * min(len(m.group(1)), 6) + " " + m.group(2),
        text,
        flags=re.M,
    )
    lines = [ln for ln in text.splitlines() if not re.match(r"^\s*[|!{}]", ln)]
    text = "\n".join(ln.rstrip() for ln in lines)
    text = re.sub(r"^\*+\s*", "- ", text, flags=re.M)
    # sections that are only lists of links (See also, References, External links) say nothing
    text = re.sub(
        r"^#+ (See also|References|External links|Further reading|Notes|Bibliography)\b.*?(?=^#+ |\Z)",
        "",
        text,
        flags=re.S | re.M,
    )
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()
