"""The reader alone, given the gold paragraph: span exact match and F1, as XQuAD reports them.

    python -m rag.evaluate.reading ../shared/bench/xquad-en-de [...] [--reader DIR] [--json]

For each answerable question of a set, the reader reads every sentence of the question's gold
paragraph (its ``context``, cut with the product's splitter, each with the sentence before it);
the answer is the best span of the sentence it ranks first. Scores follow the SQuAD/MLQA
evaluation: lower case, punctuation and articles (English, German, Spanish) removed, the best
over the gold answers. These figures are comparable with published XQuAD span figures, which
read the gold paragraph too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..chunk import sentence_bounds
from ..reader import Reader
from .questions import load_questions

ARTICLES = re.compile(r"\b(a|an|the|der|die|das|den|dem|des|ein|eine|einer|eines|einem|einen|"
                      r"el|la|los|las|un|una|unos|unas)\b")


# Chinese and Japanese characters count one by one (MLQA's mixed segmentation): those languages
# write no spaces, so a "word" would be a whole sentence
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


def normalise(text: str) -> list[str]:
    """SQuAD/MLQA answer normalisation: lower case, no punctuation, no articles, words (and each
    Chinese or Japanese character on its own)."""
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return _TOKEN.findall(ARTICLES.sub(" ", text))


def span_f1(prediction: str, gold: str) -> float:
    p, g = normalise(prediction), normalise(gold)
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g:
        return float(p == g)
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def exact(prediction: str, gold: str) -> float:
    return float(normalise(prediction) == normalise(gold))


def read_paragraph(reader: Reader, question: str, paragraph: str) -> tuple[str, str, float]:
    """(the sentence the reader ranks first, its best span, the span's probability) over ``paragraph``'s sentences."""
    bounds = list(sentence_bounds(paragraph, 0, len(paragraph)))
    sentences = [paragraph[s:e] for s, e in bounds]
    contexts = ["", *sentences[:-1]]
    said = reader.read(question, sentences, contexts)
    best = int(np.argmax([r.logit for r in said]))
    span = said[best].span
    return sentences[best], "" if span is None else sentences[best][span[0] : span[1]], said[best].span_prob


def score_set(reader: Reader, path: Path) -> dict[str, Any]:
    """Span EM and F1 (percent) and how often the right sentence came first, over a set's answerable questions."""
    cases = [c for c in load_questions(path).cases if c.answerable and c.context and c.answers]
    em, f1, sentence, sure = [], [], [], []
    for c in cases:
        chosen, span, prob = read_paragraph(reader, c.question, c.context or "")
        em.append(max(exact(span, a) for a in c.answers))
        f1.append(max(span_f1(span, a) for a in c.answers))
        sentence.append(any(a in chosen for a in c.answers))
        sure.append(prob)
    f1s, probs = np.array(f1), np.array(sure)
    # the operating point of the span shown in answers (rag.answer.SPAN_SHOWN): how many spans each
    # threshold shows and how right those are
    shown = {f"{t:g}": {"shown": round(float(np.mean(probs >= t)), 3),
                        "f1_of_shown": round(100 * float(f1s[probs >= t].mean()), 1) if (probs >= t).any() else None}
             for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7)}
    return {"questions": len(cases), "exact_match": round(100 * float(np.mean(em)), 1),
            "f1": round(100 * float(np.mean(f1)), 1), "sentence_first": round(float(np.mean(sentence)), 3),
            "by_span_probability": shown}


def main(argv: Sequence[str] | None = None) -> int:
    from ..model.export import ensure_model
    from ..settings import Paths

    parser = argparse.ArgumentParser(prog="python -m rag.evaluate.reading", description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="+", type=Path, help="question-set folders (questions.jsonl) or files")
    parser.add_argument("--reader", type=Path, default=None, help="a reader folder (default: the shipped one)")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args(argv)
    reader = Reader(ensure_model(Paths.from_env().cache).path, args.reader, precision=args.precision)
    report: dict[str, Any] = {}
    for path in args.sets:
        file = path / "questions.jsonl" if path.is_dir() else path
        report[path.name] = score_set(reader, file)
        print(f"{path.name}: {json.dumps(report[path.name])}", file=sys.stderr, flush=True)
    if len(report) > 1:
        report["average_f1"] = round(float(np.mean([r["f1"] for r in report.values()])), 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
