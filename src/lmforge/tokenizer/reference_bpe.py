"""Byte-level BPE in plain Python: a trainer and an encoder you can read in one sitting.

This is the algorithm `lmforge tokenizer train --algorithm bpe` runs (in Rust, via Hugging Face
`tokenizers`), written out for learning. On the same corpus it learns the same merges, in the same
order, and gives the same ids (tests/tokenizer/test_tokenizer_reference_bpe.py checks it); it is just
~100x slower.

The algorithm (Sennrich et al. 2016, byte-level as in GPT-2):
1. Pre-tokenize: split text into "words" with GPT-2's regex (so merges never cross a word and a
   space stays glued to the word after it), then spell each word's UTF-8 bytes with one printable
   character per byte (`bytes_to_unicode`: a space becomes `Ġ`). 256 byte symbols = the alphabet,
   so every string is encodable.
2. Count each distinct word once, with its frequency.
3. Repeat until the vocabulary is full: count adjacent symbol pairs over all words (weighted by word
   frequency), merge the most frequent pair everywhere into a new symbol, record the merge.
   Ties go to the pair whose symbols have the smaller ids, the Rust trainer's rule.
4. Encode a new word by applying the learned merges, lowest rank (earliest learned) first.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import regex

from lmforge.tokenizer.loaders import GPT2_REGEX, bytes_to_unicode

WORD_RE = regex.compile(GPT2_REGEX)


def pre_tokenize(text: str) -> list[str]:
    """GPT-2 words, each spelled in the byte alphabet ("hello world" -> ["hello", "Ġworld"])."""
    table = bytes_to_unicode()
    return ["".join(table[b] for b in word.encode("utf-8")) for word in WORD_RE.findall(text)]


@dataclass
class ReferenceBPE:
    """A trained byte-level BPE: `vocab` (token -> id) and `merges` in the order they were learned."""

    vocab: dict[str, int] = field(default_factory=dict)
    merges: list[tuple[str, str]] = field(default_factory=list)
    special_tokens: list[str] = field(default_factory=list)

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2, special_tokens: Iterable[str] = ()
    ) -> ReferenceBPE:
        # ids: special tokens first, then the 256 byte symbols in code-point order, then merges
        specials = list(dict.fromkeys(special_tokens))
        vocab = {tok: i for i, tok in enumerate(specials)}
        for symbol in sorted(bytes_to_unicode().values()):
            vocab.setdefault(symbol, len(vocab))

        word_counts: Counter[str] = Counter()
        for text in texts:
            word_counts.update(pre_tokenize(text))
        # each distinct word as a list of symbol ids, with its count
        words = [[vocab[ch] for ch in w] for w in word_counts]
        counts = list(word_counts.values())
        id_to_token = {i: t for t, i in vocab.items()}

        # pair -> total count, and pair -> words that contain it (to update only those)
        pair_counts: Counter[tuple[int, int]] = Counter()
        where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
        for w, symbols in enumerate(words):
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] += counts[w]
                where[pair].add(w)

        merges: list[tuple[str, str]] = []
        while len(vocab) < vocab_size and pair_counts:
            # most frequent pair; ties -> smallest (left id, right id)
            best = min(pair_counts, key=lambda p: (-pair_counts[p], p))
            if pair_counts[best] < max(min_frequency, 1):
                break
            left, right = best
            new_token = id_to_token[left] + id_to_token[right]
            new_id = vocab.setdefault(new_token, len(vocab))
            id_to_token[new_id] = new_token
            merges.append((id_to_token[left], id_to_token[right]))
            for w in list(where[best]):
                old = words[w]
                # merge left-to-right, without overlaps ("a a a" with (a, a) -> "aa a")
                new, i = [], 0
                while i < len(old):
                    if i + 1 < len(old) and old[i] == left and old[i + 1] == right:
                        new.append(new_id)
                        i += 2
                    else:
                        new.append(old[i])
                        i += 1
                for pair in zip(old, old[1:]):
                    pair_counts[pair] -= counts[w]
                    if pair_counts[pair] <= 0:
                        del pair_counts[pair]
                    where[pair].discard(w)
                for pair in zip(new, new[1:]):
                    pair_counts[pair] += counts[w]
                    where[pair].add(w)
                words[w] = new
        return cls(vocab, merges, specials)

    # ---- encoding ----------------------------------------------------------------------------

    @property
    def ranks(self) -> dict[tuple[str, str], int]:
        return {pair: rank for rank, pair in enumerate(self.merges)}

    def encode_word(self, word: str, ranks: dict[tuple[str, str], int] | None = None) -> list[str]:
        """Apply merges to one pre-tokenized word: repeatedly merge the adjacent pair learned
        earliest (leftmost on ties) until no learned pair is left."""
        ranks = self.ranks if ranks is None else ranks
        symbols = list(word)
        while len(symbols) > 1:
            candidates = [
                (ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))
            ]
            rank, i = min(candidates)
            if rank == len(ranks):
                break
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        return symbols

    def encode(self, text: str) -> list[int]:
        ranks = self.ranks
        return [self.vocab[tok] for word in pre_tokenize(text) for tok in self.encode_word(word, ranks)]

    def decode(self, ids: Iterable[int]) -> str:
        inverse_vocab = {i: t for t, i in self.vocab.items()}
        byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
        out = bytearray()
        for i in ids:
            token = inverse_vocab[i]
            if token in self.special_tokens:
                out += token.encode("utf-8")
            else:
                out += bytes(byte_of[ch] for ch in token)
        return out.decode("utf-8", errors="replace")
