"""The scorer's training cases: every development question asked once through the product's retrieval.

For each question of a set, the candidates are the sentences of its top chunks
(``rag.features``), with labels: ``strict`` (holds a gold answer inside the gold passage) and
``loose`` (holds a gold answer: what answer_accuracy counts). With ``simulate``, each answerable
question is also asked twice more as an unanswerable one: with the sentences of its document that
hold the answer masked out (an on-topic near miss), and with its whole document masked out (off
topic). Cases are cached under the work folder by the code that makes features and the questions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..encoders import terms_encoder
from ..evaluate import contains_answer, load_questions
from ..evaluate.questions import gold_span
from ..features import SentenceFeatures, question_cues, sentence_features
from ..pipeline import Pipeline, ensure_index
from ..retrieve import retrieve
from ..settings import Settings

PACKAGE = Path(__file__).resolve().parents[1]  # rag/: the code whose change invalidates the cache


@dataclass
class Case:
    set: str
    qid: str
    lang: str
    group: str
    variant: str  # "answerable", "masked" (answer sentences removed), "offdoc" (document removed), "seed"
    answerable: bool
    sf: SentenceFeatures
    texts: list[str]
    strict: np.ndarray  # per candidate: holds a gold answer inside the gold passage
    loose: np.ndarray  # per candidate: holds a gold answer (what answer_accuracy counts)
    question: str = ""


def _vectors(pipe: Pipeline, questions: list[str], cache: Path) -> np.ndarray:
    key = hashlib.sha1(("\n".join(questions) + pipe.encoder.model_id).encode()).hexdigest()[:12]
    path = cache / f"{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = pipe.encoder.encode_queries(questions)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _terms(pipe: Pipeline, questions: list[str], cache: Path) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """The questions' latent terms (cached like their vectors); None each when the model has none."""
    terms = terms_encoder(pipe.encoder)
    if terms is None or pipe.index.sentence_terms is None:
        return [None] * len(questions)
    made = pipe.encoder.model_id + "terms" + ("" if pipe.settings.terms_pass == "two" else pipe.settings.terms_pass)
    key = hashlib.sha1(("\n".join(questions) + made).encode()).hexdigest()[:12]
    path = cache / f"{key}.npz"
    if not path.exists():  # as rag.pipeline makes a question's: from its "query: " pass where it can
        ids, weights = terms.query_terms(questions) if hasattr(terms, "query_terms") else terms.encode_terms(questions)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, ids=ids, weights=weights)
    data = np.load(path)
    return list(zip(data["ids"], data["weights"], strict=True))


def _collect(name: str, docs: Path, questions_path: Path, index_dir: Path, settings: Settings, cache: Path,
            group_of: dict[str, str], simulate: bool) -> list[Case]:
    ensure_index(docs, index_dir, settings)
    pipe = Pipeline.open(index_dir, settings)
    index = pipe.index
    qs = load_questions(questions_path).cases
    vectors = _vectors(pipe, [q.question for q in qs], cache)
    question_terms = _terms(pipe, [q.question for q in qs], cache)
    out = []
    # each document's sentence ids, from the rows (a scan of index.sentences per question built every span)
    sentences_of = dict(zip(index.sentences.ids, index.sentences.by_document(), strict=True))
    for q, vec, terms in zip(qs, vectors, question_terms, strict=True):
        retrieval = retrieve(index, vec, q.question, settings, query_terms=terms)
        doc_text = index.documents[q.doc].text if q.doc else ""
        span = gold_span(doc_text, q.context)

        # XQuAD: the article; seed: the fact asked about (paraphrases of one question share it)
        group = group_of.get(q.doc or "") or f"{name}/{q.group or q.id}"
        asked = (name, group, index, retrieval, q, span, settings.answer_chunks)
        out.append(_case(asked, "seed" if not simulate else "answerable", set(), q.answerable))
        if simulate and q.answerable:
            in_doc = [int(i) for i in sentences_of.get(q.doc or "", ())]
            holding = {i for i in in_doc if contains_answer(index.sentences[i].text, q.answers)}
            out.append(_case(asked, "masked", holding, False))
            out.append(_case(asked, "offdoc", set(in_doc), False))
    return out


def _case(asked: tuple, variant: str, exclude: set[int], answerable: bool) -> Case:
    """One question's candidates and labels, with ``exclude`` masked out of the index."""
    name, group, index, retrieval, q, span, chunks = asked
    sf = sentence_features(index, retrieval, chunks, exclude)
    texts = [index.sentences[s].text for s in sf.sentences]
    loose = np.array([answerable and contains_answer(t, q.answers) for t in texts], dtype=bool)
    strict = np.array([
        bool(loose[i]) and index.sentences[s].doc == q.doc
        and (span is None or (index.sentences[s].start < span[1] and span[0] < index.sentences[s].end))
        for i, s in enumerate(sf.sentences)], dtype=bool)
    return Case(name, q.id, q.question_lang, group, variant, answerable, sf, texts, strict, loose, q.question)


def collect(name: str, docs: Path, questions_path: Path, index_dir: Path, settings: Settings, cache: Path,
            group_of: dict[str, str], simulate: bool) -> list[Case]:
    """``_collect``, cached under ``cache`` by the code that makes features and the questions."""
    made_by = ("features.py", "retrieve.py", "chunk.py", "encoders.py", "local_encoders.py")
    code = b"".join((PACKAGE / f).read_bytes() for f in made_by)
    tag = (name + str(simulate) + ("" if simulate else "v2")
           + ("" if settings.chunk_vectors == "encoded" else settings.chunk_vectors)
           + ("" if settings.terms_pass == "two" else settings.terms_pass)).encode()
    key = hashlib.sha1(code + questions_path.read_bytes() + tag).hexdigest()[:12]
    meta_path, arrays_path = cache / f"cases-{key}.json", cache / f"cases-{key}.npz"
    if meta_path.exists() and arrays_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        arrays = np.load(arrays_path)
        x, strict, loose, offsets = arrays["x"], arrays["strict"], arrays["loose"], arrays["offsets"]
        out = []
        for i, m in enumerate(meta):
            a, b = int(offsets[i]), int(offsets[i + 1])
            cues = question_cues(m["question"])
            sf = SentenceFeatures(tuple(m["sentences"]), x[a:b], cues, m["specificity"])
            out.append(Case(m["set"], m["qid"], m["lang"], m["group"], m["variant"], m["answerable"], sf,
                            m["texts"], strict[a:b], loose[a:b], m["question"]))
        return out
    out = _collect(name, docs, questions_path, index_dir, settings, cache, group_of, simulate)
    meta = [{"set": c.set, "qid": c.qid, "lang": c.lang, "group": c.group, "variant": c.variant,
             "answerable": c.answerable, "question": c.question, "sentences": list(c.sf.sentences),
             "specificity": c.sf.specificity, "texts": c.texts} for c in out]
    cache.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(c.texts) for c in out])
    np.savez(arrays_path, x=np.concatenate([c.sf.x for c in out]), strict=np.concatenate([c.strict for c in out]),
             loose=np.concatenate([c.loose for c in out]), offsets=offsets)
    meta_path.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return out
