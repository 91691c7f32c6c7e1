"""Shared by the research scripts: where the XQuAD sets are, a regex sentence splitter, loading, the cache key."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

BENCH = "/work/shared/bench"
SETS = ["en-de", "en-es", "de-de", "es-es"]
DOCLANG = {"en-de": "de", "en-es": "es", "de-de": "de", "es-es": "es"}
CACHE = os.environ.get("RESEARCH_CACHE", os.path.join(os.path.dirname(os.path.abspath(__file__)), "cache"))

ABBR = {"dr", "st", "sr", "jr", "mr", "mrs", "ms", "prof", "etc", "bzw", "vs", "ca", "sra", "sta", "no", "nr",
        "inc", "ltd", "co", "corp", "dt", "usw", "vgl", "ggf", "evtl", "sog", "u", "z", "b", "d", "h", "mio", "mrd",
        "ed", "vol", "gen", "gov", "sen", "rep", "rev", "fig", "approx", "e", "g", "i", "p", "pp", "ud", "uds", "av",
        "avda", "aprox", "núm", "pág", "jan", "feb", "mar", "apr", "aug", "sept", "sep", "oct", "okt", "nov", "dec",
        "dez", "ee", "uu", "ene", "abr", "ago", "dic", "chr", "jh", "jhd", "s", "v"}
# candidate boundary: [.!?] (+closing quotes/brackets) + whitespace + (uppercase | digit | opening quote)
_BOUND = re.compile(r'[.!?]["\u201d\u2019»)\]]*\s+(?=[A-ZÀ-ÖØ-Þ\u00c0-\u024f\d"\u201c\u201e«¿¡(\'])')


def split_sentences(text: str) -> list[tuple[int, int]]:
    """returns list of (start, end) char spans covering text (stripped)."""
    spans, start = [], 0
    for m in _BOUND.finditer(text):
        end_punct = m.start()  # index of the punctuation
        if text[end_punct] == ".":
            # token before the period
            j = end_punct
            while j > 0 and not text[j - 1].isspace():
                j -= 1
            tok = text[j:end_punct]
            last = re.split(r"[.\s(]", tok)[-1] if tok else ""
            core = tok.strip("(\"'“„«").lower()
            if len(last) == 1 and last.isalpha():   # single-letter initial / z. B. / U.S.
                continue
            if core.rstrip(".").split(".")[-1] in ABBR or core in ABBR:
                continue
            if re.fullmatch(r"\(?\d{1,2}", tok):  # German ordinal "20. Jahrhundert"
                continue
        # a capital letter must follow; digits allowed
        cut = m.end()
        seg_end = m.start() + len(m.group(0).rstrip())
        if text[start:seg_end].strip():
            spans.append((start, seg_end))
        start = cut
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def load_corpus(lang: str) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """docs for language lang ('de'/'es'): returns paras list of dict, sents list of dict"""
    setname = {"de": "de-de", "es": "es-es"}[lang]
    files = sorted(glob.glob(f"{BENCH}/xquad-{setname}/docs/*.txt"))
    paras: list[dict[str, Any]] = []
    sents: list[dict[str, Any]] = []
    for di, f in enumerate(files):
        name = os.path.basename(f)
        with open(f, encoding="utf-8", newline="") as fh:
            txt = fh.read()
        for pi, p in enumerate(txt.split("\n\n")):
            pid = len(paras)
            paras.append(dict(doc=name, doc_idx=di, pidx=pi, text=p))
            for (s, e) in split_sentences(p):
                sents.append(dict(pid=pid, start=s, end=e, text=p[s:e]))
    return files, paras, sents


def load_questions(setname: str) -> list[dict[str, Any]]:
    with open(f"{BENCH}/xquad-{setname}/questions.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def norm(s: str) -> str:
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    return re.sub(r"\s+", " ", s).strip().lower()


def key(model: str, kind: str, texts: Sequence[str]) -> str:
    h = hashlib.md5(("\x00".join(texts)).encode()).hexdigest()[:12]
    return f"{CACHE}/{model}_{kind}_{h}.npy"
