"""Stage 2, chunk: paragraphs, sentences and overlapping chunks, each with exact offsets.

Sentences come from a rule-based splitter that knows French, German, Spanish and English
abbreviations, quotes and parentheses. Chunks are made by langchain-text-splitters
(``rag.chunk_merge``, imported by builds only) from whole sentences (a sentence longer than a
chunk is cut at clause, then word boundaries) and never cross a paragraph. Every span is
located in the original text, so ``doc.text[start:end]`` equals its text by construction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .types import Chunk, Document, Span

SPLITTER_VERSION = 4  # bump when sentence or chunk boundaries change: the manifest records it

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_LINE_BREAK = re.compile(r"\s*\n\s*")
# Sentence-final punctuation, then any closing quotes or brackets. German closes with “ and ‘;
# only » may follow a space (French spacing): a straight quote after a space opens the next
# sentence ('He left. "Hello," she said.').
# Also the Arabic question mark and full stop and the Devanagari danda. A full-width stop or mark
# (Chinese, Japanese) ends a sentence with no space after it, unless a closing quote or bracket
# follows it (「行きます。」と言った: the quote goes on).
_END = re.compile(r"[.!?…؟۔।॥]+(?:[ \u00a0\u202f]?»|[”“\"’‘')\]])*|[。！？]+")
_WHITESPACE = re.compile(r"[\s\u00a0\u202f]*")
_OPENERS = "«\"“„‘'([¿¡—–-"
_OPEN, _CLOSE = "(（「『", ")）」』"
# Words that end with a period without ending a sentence (lower-cased, without the period).
ABBREVIATIONS = frozenset(
    """
    m mm mme mmes mlle mlles dr drs pr prof st ste sts mgr me mes
    mr mrs ms jr sr sra srta sres dra dña dn etc cf vs env art ch chap vol no nos nr nº n° p pp
    fig figs éd ed eds min max ca bzw usw vgl ggf evtl inkl z. b. d. h. u. a. o. s. hl gen
    av avda apdo ud uds lic ing arq gral ej pág págs núm co corp inc ltd dept univ approx
    janv févr avr juil sept oct nov déc jan feb mar apr jun jul aug sep dec
    """.split()
)


@dataclass(frozen=True)
class Paragraph:
    start: int
    end: int
    number: int


def paragraphs(doc: Document) -> list[Paragraph]:
    """Non-empty paragraphs of the document body (blank-line separated), 1-based."""
    out: list[Paragraph] = []
    pos = doc.body_start
    text = doc.text
    for brk in _PARAGRAPH_BREAK.finditer(text, pos):
        _append_paragraph(out, text, pos, brk.start())
        pos = brk.end()
    _append_paragraph(out, text, pos, len(text))
    return out


def _append_paragraph(out: list[Paragraph], text: str, start: int, end: int) -> None:
    start, end = _trim(text, start, end)
    if start < end:
        out.append(Paragraph(start, end, len(out) + 1))


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and (text[start].isspace() or text[start] == "\ufeff"):
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _is_abbreviation(text: str, start: int, dot: int) -> bool:
    """Is the period at ``dot`` part of an abbreviation, an initial or an ordinal number?"""
    word_start = dot
    while word_start > start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:dot].lstrip("(«\"“'‘[")
    if not word:
        return False
    low = word.lower()
    if low in ABBREVIATIONS or (low.split(".")[-1] in ABBREVIATIONS and "." in low):
        return True
    if len(word) == 1 and word.isalpha():  # an initial: "J. Sullivan"
        return True
    if re.fullmatch(r"(?:[A-Za-zÀ-ÿ]\.)+[A-Za-zÀ-ÿ]", word):  # "U.S", "z.B"
        return True
    # German and Danish ordinals ("am 3. Oktober") and list numbers.
    return word.isdigit() and len(word) <= 2


def sentence_bounds(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Sentence spans inside ``text[start:end]`` (a paragraph)."""
    for line in _lines(text, start, end):
        yield from _sentences_in_line(text, *line)


def _lines(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    pos = start
    for brk in _LINE_BREAK.finditer(text, start, end):
        if brk.start() > pos:
            yield _trim(text, pos, brk.start())
        pos = brk.end()
    s, e = _trim(text, pos, end)
    if s < e:
        yield s, e


def _depth(text: str) -> int:
    return sum(text.count(c) for c in _OPEN) - sum(text.count(c) for c in _CLOSE)


def _uncased(char: str) -> bool:
    """A letter of a script without capitals (Arabic, Hebrew, Devanagari, CJK …): any may open a sentence."""
    return char.isalpha() and not char.isupper() and not char.islower()


def _sentences_in_line(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    sent_start = start
    depth = 0  # parenthesis depth: a period inside "( … )" does not end the sentence
    scan = start
    for match in _END.finditer(text, start, end):
        depth += _depth(text[scan : match.start()]) + _depth(match.group())
        scan = match.end()
        depth = max(depth, 0)
        if depth > 0:
            continue
        gap = _WHITESPACE.match(text, match.end(), end)
        nxt = gap.end() if gap else match.end()
        if nxt >= end:
            continue  # the end of the line
        follower = text[nxt]
        if match.group()[0] in "。！？":
            if follower in "」』）〕】”’\"'":
                continue
        elif nxt == match.end():
            continue  # "3.5", "example.com"
        elif not (follower.isupper() or follower.isdigit() or follower in _OPENERS or _uncased(follower)):
            continue
        if follower == "(" and text[nxt + 1 : nxt + 2].isdigit():  # „Fürchtet sie!“ (2006) als auch …
            continue
        if match.group()[0] == "." and len(match.group().rstrip("»”“\"’‘')] \u00a0\u202f")) == 1:
            if _is_abbreviation(text, sent_start, match.start()):
                continue
        yield sent_start, match.end()
        sent_start = nxt
    if sent_start < end:
        yield _trim(text, sent_start, end)


def split_sentences(doc: Document, paras: Iterable[Paragraph] | None = None) -> list[Span]:
    """Every sentence of the document body, in order."""
    out: list[Span] = []
    for para in paragraphs(doc) if paras is None else paras:
        for s, e in sentence_bounds(doc.text, para.start, para.end):
            out.append(Span(doc.id, s, e, doc.text[s:e], para.number))
    return out


def chunk_document(
    doc: Document, chunk_size: int, chunk_overlap: int, first_sentence_id: int = 0
) -> tuple[list[Chunk], list[Span]]:
    """Chunks and sentences of one document; chunk sentence ids start at ``first_sentence_id``."""
    from .chunk_merge import SentenceMerger  # langchain: imported by builds only (~0.3 s of every start)

    merger = SentenceMerger(chunk_size, chunk_overlap)
    paras = paragraphs(doc)
    sentences = split_sentences(doc, paras)
    by_paragraph: dict[int, list[Span]] = {}
    for sentence in sentences:  # grouped once: a scan per paragraph made big files quadratic
        by_paragraph.setdefault(sentence.paragraph, []).append(sentence)
    chunks: list[Chunk] = []
    sid = 0
    for para in paras:
        para_sents = by_paragraph.get(para.number, [])
        # each piece runs to the start of the next sentence, so joined pieces are the paragraph
        starts = [s.start for s in para_sents] + [para.end]
        pieces = [doc.text[a:b] for a, b in zip(starts, starts[1:])]
        for start, end in merger.split_pieces(pieces, starts[0]):
            piece = doc.text[start:end]
            while sid < len(sentences) and sentences[sid].end <= start:
                sid += 1
            last = sid
            while last < len(sentences) and sentences[last].start < end:
                last += 1
            chunks.append(
                Chunk(doc.id, start, end, piece, para.number, first_sentence_id + sid, first_sentence_id + last)
            )
    return chunks, sentences
