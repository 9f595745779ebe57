"""Text-generation metrics: BLEU, chrF/chrF++, TER (sacrebleu), ROUGE (rouge-score), METEOR (nltk).

The reference implementations are the engines, so scores equal the published tools' figures. Every
metric is split into per-segment sufficient statistics and an aggregate over them: the corpus score is
`aggregate(segment_stats(...))`, and a bootstrap confidence interval resamples the rows of those
statistics without re-tokenizing anything (see `lmforge.eval.bootstrap`).

Scales follow the reference tools: BLEU, chrF and TER are 0-100 (sacrebleu), ROUGE and METEOR 0-1.
References may be one string per prediction or a list of strings per prediction (multi-reference).
"""

from __future__ import annotations

import functools
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge.errors import LMForgeError

References = Sequence[str] | Sequence[Sequence[str]]


def normalize_references(predictions: Sequence[str], references: References) -> list[list[str]]:
    """Check a prediction/reference pairing and return one list of references per prediction."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise LMForgeError("predictions and references must be lists of strings, not a single string")
    if len(predictions) == 0:
        raise LMForgeError("no predictions given: a text metric needs at least one prediction")
    if len(predictions) != len(references):
        raise LMForgeError(
            f"got {len(predictions)} predictions but {len(references)} references: "
            "give one reference (or one list of references) per prediction"
        )
    out: list[list[str]] = []
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str):
            raise LMForgeError(f"prediction {i} is {type(pred).__name__}, expected a string")
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs or all(not isinstance(r, str) or not r.strip() for r in refs):
            raise LMForgeError(f"reference {i} is empty: every prediction needs a non-empty reference")
        if any(not isinstance(r, str) for r in refs):
            raise LMForgeError(f"reference {i} holds a non-string value; references must be strings")
        out.append(refs)
    return out


def _ref_streams(refs: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference slot, `None` where an item has fewer references."""
    width = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(width)]


@dataclass(frozen=True)
class TextMetric:
    """A corpus metric as per-segment statistics (n, k) plus an aggregate over any subset of rows."""

    name: str
    description: str
    segment_stats: Callable[[list[str], list[list[str]]], np.ndarray]
    aggregate: Callable[[np.ndarray], dict[str, float]]

    def __call__(self, predictions: Sequence[str], references: References) -> dict[str, float]:
        refs = normalize_references(predictions, references)
        return self.aggregate(self.segment_stats(list(predictions), refs))


# --- sacrebleu: BLEU, chrF, chrF++, TER -------------------------------------------------------------


def _sacrebleu_metric(name: str, **kwargs: object):
    import sacrebleu

    factory = {"bleu": sacrebleu.BLEU, "chrf": sacrebleu.CHRF, "ter": sacrebleu.TER}[name]
    return factory(**kwargs)


def _sacrebleu_text_metric(key: str, kind: str, description: str, **kwargs: object) -> TextMetric:
    def segment_stats(preds: list[str], refs: list[list[str]]) -> np.ndarray:
        metric = _sacrebleu_metric(kind, **kwargs)
        # sacrebleu's own significance tests use these two methods to resample without re-tokenizing.
        stats = metric._extract_corpus_statistics(preds, _ref_streams(refs))
        return np.asarray(stats, dtype=np.float64)

    def aggregate(stats: np.ndarray) -> dict[str, float]:
        metric = _sacrebleu_metric(kind, **kwargs)
        totals = stats.sum(axis=0)
        if kind != "ter":  # BLEU and chrF count n-gram matches: integer statistics
            totals = np.rint(totals).astype(np.int64)
        return {key: float(metric._compute_score_from_stats(totals.tolist()).score)}

    return TextMetric(key, description, segment_stats, aggregate)


def bleu(
    predictions: Sequence[str],
    references: References,
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
    max_ngram_order: int = 4,
) -> float:
    """Corpus BLEU (0-100) exactly as sacrebleu computes it (default 13a tokenization); a lower
    `max_ngram_order` scores texts shorter than 4 words (BLEU-4 of 3-word captions is 0)."""
    kwargs: dict[str, object] = {"tokenize": tokenize, "lowercase": lowercase}
    if max_ngram_order != 4:
        kwargs["max_ngram_order"] = max_ngram_order
    m = _sacrebleu_text_metric("bleu", "bleu", "", **kwargs)
    return m(predictions, references)["bleu"]


def chrf(
    predictions: Sequence[str],
    references: References,
    *,
    word_order: int = 0,
    char_order: int = 6,
    beta: int = 2,
    lowercase: bool = False,
) -> float:
    """Corpus chrF (0-100) as sacrebleu; `word_order=2` gives chrF++."""
    m = _sacrebleu_text_metric(
        "chrf", "chrf", "", word_order=word_order, char_order=char_order, beta=beta, lowercase=lowercase
    )
    return m(predictions, references)["chrf"]


def ter(
    predictions: Sequence[str],
    references: References,
    *,
    normalized: bool = False,
    case_sensitive: bool = False,
) -> float:
    """Corpus translation edit rate (0-100+, lower is better) as sacrebleu."""
    m = _sacrebleu_text_metric("ter", "ter", "", normalized=normalized, case_sensitive=case_sensitive)
    return m(predictions, references)["ter"]


# --- ROUGE (rouge-score) ----------------------------------------------------------------------------

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def _rouge_text_metric(rouge_types: Sequence[str] = ROUGE_TYPES, use_stemmer: bool = False) -> TextMetric:
    types = tuple(rouge_types)
    for t in types:
        if t not in ROUGE_TYPES and not re.fullmatch(r"rouge[1-9]", t):
            raise LMForgeError(f"unknown ROUGE type '{t}'; known: rouge1..rouge9, rougeL, rougeLsum")

    def segment_stats(preds: list[str], refs: list[list[str]]) -> np.ndarray:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
        rows = []
        for pred, rs in zip(preds, refs):
            # rouge-score's multi-reference rule: per type, the reference with the best F-measure.
            scores = scorer.score_multi(rs, pred) if len(rs) > 1 else scorer.score(rs[0], pred)
            rows.append(
                [v for t in types for v in (scores[t].precision, scores[t].recall, scores[t].fmeasure)]
            )
        return np.asarray(rows, dtype=np.float64)

    def aggregate(stats: np.ndarray) -> dict[str, float]:
        mean = stats.mean(axis=0)
        out: dict[str, float] = {}
        for i, t in enumerate(types):
            out[t] = float(mean[3 * i + 2])
            out[f"{t}_precision"] = float(mean[3 * i])
            out[f"{t}_recall"] = float(mean[3 * i + 1])
        return out

    return TextMetric("rouge", "ROUGE F-measure (mean over segments)", segment_stats, aggregate)


def rouge(
    predictions: Sequence[str],
    references: References,
    *,
    rouge_types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = False,
) -> dict[str, float]:
    """Mean ROUGE F-measure (and precision/recall) over segments, per rouge-score.

    rougeLsum splits summaries into sentences on newlines, as rouge-score does.
    """
    return _rouge_text_metric(rouge_types, use_stemmer)(predictions, references)


# --- METEOR (nltk + WordNet) ------------------------------------------------------------------------

# The 45 lexicographer files of WordNet 3.0 (lexnames(5WN)); Debian's wordnet-base package ships the
# database but not this small index file, which nltk's reader needs.
_LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_LEXNAMES_TEXT = "".join(
    f"{i:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES)
)

WORDNET_DIRS = ("/usr/share/wordnet",)  # Debian/Ubuntu `wordnet-base`


def wordnet_dir() -> Path:
    """Folder holding the WordNet 3.0 database: `$LMFORGE_WORDNET`, nltk's data, or Debian's package."""
    candidates = [os.environ["LMFORGE_WORDNET"]] if os.environ.get("LMFORGE_WORDNET") else []
    try:
        import nltk.data

        candidates += [str(Path(p) / "corpora" / "wordnet") for p in nltk.data.path]
    except ImportError:  # pragma: no cover - nltk is a dependency
        pass
    candidates += list(WORDNET_DIRS)
    for c in candidates:
        if (Path(c) / "data.noun").is_file() and (Path(c) / "index.noun").is_file():
            return Path(c)
    raise LMForgeError(
        "METEOR needs the WordNet 3.0 database, which was not found: install Debian's `wordnet-base` "
        "(`apt-get install wordnet-base`, done by `make setup`) or set LMFORGE_WORDNET to a folder with "
        "data.noun/index.noun"
    )


@functools.cache
def load_wordnet():
    """nltk's WordNet reader over the local database (no download); supplies `lexnames` if missing."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = wordnet_dir()

    class _LocalWordNet(WordNetCorpusReader):
        def open(self, fileid):  # noqa: A003 - nltk's method name
            if fileid == "lexnames" and not (root / "lexnames").is_file():
                return io.StringIO(_LEXNAMES_TEXT)
            return super().open(fileid)

        def map_wn(self, version="wordnet"):
            return None  # English WordNet 3.0 itself: no mapping from another version is needed

    import warnings

    import nltk.data

    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))  # nltk reads only below its data paths (nltk.pathsec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed here
        return _LocalWordNet(str(root), None)


_TOKEN = re.compile(r"\w+|[^\w\s]")


def meteor_tokenize(text: str) -> list[str]:
    """METEOR's word split here: runs of word characters and single punctuation marks."""
    return _TOKEN.findall(text)


def _meteor_text_metric(alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5) -> TextMetric:
    def segment_stats(preds: list[str], refs: list[list[str]]) -> np.ndarray:
        from nltk.translate.meteor_score import meteor_score

        wn = load_wordnet()
        scores = [
            meteor_score(
                [meteor_tokenize(r) for r in rs],
                meteor_tokenize(p),
                wordnet=wn,
                alpha=alpha,
                beta=beta,
                gamma=gamma,
            )
            for p, rs in zip(preds, refs)
        ]
        return np.asarray(scores, dtype=np.float64)[:, None]

    def aggregate(stats: np.ndarray) -> dict[str, float]:
        return {"meteor": float(stats[:, 0].mean())}

    return TextMetric("meteor", "METEOR (nltk, mean over segments)", segment_stats, aggregate)


def meteor(predictions: Sequence[str], references: References) -> float:
    """Mean sentence METEOR (0-1) from nltk with WordNet synonyms, over `meteor_tokenize` tokens."""
    return _meteor_text_metric()(predictions, references)["meteor"]


# --- registry ---------------------------------------------------------------------------------------


def text_metric(name: str) -> TextMetric:
    """A text metric by name (`bleu`, `chrf`, `chrf++`, `ter`, `rouge`, `meteor`)."""
    factories: dict[str, Callable[[], TextMetric]] = {
        "bleu": lambda: _sacrebleu_text_metric("bleu", "bleu", "sacreBLEU corpus BLEU (0-100)"),
        "chrf": lambda: _sacrebleu_text_metric("chrf", "chrf", "sacreBLEU chrF (0-100)"),
        "chrf++": lambda: _sacrebleu_text_metric("chrf++", "chrf", "sacreBLEU chrF++ (0-100)", word_order=2),
        "ter": lambda: _sacrebleu_text_metric("ter", "ter", "sacreBLEU TER (0-100, lower is better)"),
        "rouge": _rouge_text_metric,
        "meteor": _meteor_text_metric,
    }
    if name not in factories:
        raise LMForgeError(f"unknown text metric '{name}'; known: {', '.join(TEXT_METRICS)}")
    return factories[name]()


TEXT_METRICS = ("bleu", "chrf", "chrf++", "ter", "rouge", "meteor")
