"""Stage 2, chunk: sentence boundaries in four languages, overlapping chunks, exact offsets."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import SEEDS, SHARED_BENCH

from rag.chunk import chunk_document, paragraphs, split_sentences
from rag.errors import SettingsError
from rag.load import load_documents, parse_document
from rag.settings import Settings
from rag.types import Chunk, Document, Span

if TYPE_CHECKING:
    from _pytest.mark.structures import ParameterSet  # what pytest.param returns; pytest names it nowhere public

DEFAULT = Settings()


def doc_of(text: str, doc_id: str = "doc.txt") -> Document:
    return parse_document(doc_id, text.encode("utf-8"))


def sentences_of(text: str) -> list[str]:
    return [s.text for s in split_sentences(doc_of(text))]


def check_spans(doc: Document, chunks: list[Chunk], sentences: list[Span], chunk_size: int) -> None:
    """Every invariant a chunking must keep, whatever the text."""
    paras = {p.number: p for p in paragraphs(doc)}
    for span in [*chunks, *sentences]:
        assert span.doc == doc.id
        assert doc.text[span.start : span.end] == span.text, (doc.id, span)
        assert span.text and span.text == span.text.strip()
        para = paras[span.paragraph]
        assert para.start <= span.start < span.end <= para.end, "a span crosses its paragraph"
    for chunk in chunks:
        assert len(chunk.text) <= chunk_size
        assert chunk.first_sentence < chunk.last_sentence
        for s in sentences[chunk.first_sentence : chunk.last_sentence]:
            assert s.start < chunk.end and chunk.start < s.end, "a chunk lists a sentence it does not hold"
    for a, b in pairwise(chunks):
        assert (a.start, a.end) < (b.start, b.end), "chunks out of document order"
    for i in range(len(sentences)):
        assert any(c.first_sentence <= i < c.last_sentence for c in chunks), f"sentence {i} is in no chunk"
    assert [s.start for s in sentences] == sorted(s.start for s in sentences)


# ------------------------------------------------------------------------------- offsets


def _folders() -> list[ParameterSet]:
    folders = [pytest.param(SEEDS, id="seeds")]
    bench = sorted(SHARED_BENCH.glob("*/docs")) if SHARED_BENCH.is_dir() else []
    folders += [pytest.param(p, id=p.parent.name) for p in bench]
    if not bench:
        folders.append(pytest.param(None, id="bench", marks=pytest.mark.skip(
            reason=f"no benchmark documents at {SHARED_BENCH} (CI has them)")))
    return folders


@pytest.mark.parametrize("folder", _folders())
@pytest.mark.parametrize(("size", "overlap"), [(DEFAULT.chunk_size, DEFAULT.chunk_overlap), (300, 100)])
def test_every_span_of_real_documents_indexes_its_text(folder: Path, size: int, overlap: int) -> None:
    docs = load_documents(folder).documents
    assert docs
    total = 0
    for doc in docs:
        chunks, sentences = chunk_document(doc, size, overlap)
        assert chunks and sentences
        check_spans(doc, chunks, sentences, size)
        total += len(chunks) + len(sentences)
    assert total > len(docs)


def test_seed_sentences() -> None:
    doc = load_documents(SEEDS).documents[0]
    sentences = [s.text for s in split_sentences(doc)]
    assert len(sentences) == 15
    assert sentences[0] == (
        "Le 10 octobre, le président de la République d'Azerbaïdjan, Ilham Aliyev, a reçu un coup de "
        "téléphone du Secrétaire d'État américain, Antony Blinken."
    )
    # the parenthesis is part of its sentence, and "3 900" does not end one
    assert any(s.startswith("Antony Blinken a évoqué") and s.endswith("au chef de l'Etat.") for s in sentences)
    assert any(s.startswith("Le président azerbaïdjanais a rappelé que plus de 3 900 citoyens")
               and s.endswith("sur l'emplacement des fosses communes.") for s in sentences)
    assert [s.paragraph for s in split_sentences(doc)] == [1, 2, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 5, 6]


# ------------------------------------------------------------------------------- sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # French: titles, saints, guillemets, apostrophes, spaced thousands, parentheses
        ("M. Macron est arrivé à Paris. Il a parlé avec Mme Dupont.",
         ["M. Macron est arrivé à Paris.", "Il a parlé avec Mme Dupont."]),
        ("Il est allé à St-Pétersbourg. Puis il est rentré.",
         ["Il est allé à St-Pétersbourg.", "Puis il est rentré."]),
        ("Il est allé à St. Pétersbourg hier. Puis il est rentré à Paris.",
         ["Il est allé à St. Pétersbourg hier.", "Puis il est rentré à Paris."]),
        ("MM. Dupont et Durand sont là. Mlle Martin aussi.",
         ["MM. Dupont et Durand sont là.", "Mlle Martin aussi."]),
        ("« Nous sommes prêts. » Il a ajouté : « Rien n’est fait. » C’est l’avis du ministre.",
         ["« Nous sommes prêts. »", "Il a ajouté : « Rien n’est fait. »", "C’est l’avis du ministre."]),
        ("Il a mis l’accent sur l’importance du traité. L’Arménie a répondu.",
         ["Il a mis l’accent sur l’importance du traité.", "L’Arménie a répondu."]),
        ("Plus de 3 900 citoyens sont portés disparus. Le chef de l’État a parlé.",
         ["Plus de 3 900 citoyens sont portés disparus.", "Le chef de l’État a parlé."]),
        ("Le traité (signé à Paris. Voir annexe.) est valide. Il reste en vigueur.",
         ["Le traité (signé à Paris. Voir annexe.) est valide.", "Il reste en vigueur."]),
        ("Le prix est de 3.5 euros. C’est peu.", ["Le prix est de 3.5 euros.", "C’est peu."]),
        ("Vraiment ? Oui ! Bien sûr… Alors partons.", ["Vraiment ?", "Oui !", "Bien sûr…", "Alors partons."]),
        # German: ordinals and abbreviations
        ("Die Mauer fiel am 9. November 1989. Am 3. Oktober 1990 kam die Einheit.",
         ["Die Mauer fiel am 9. November 1989.", "Am 3. Oktober 1990 kam die Einheit."]),
        ("Es gibt viele Beispiele, z. B. Äpfel und Birnen. Das ist gut.",
         ["Es gibt viele Beispiele, z. B. Äpfel und Birnen.", "Das ist gut."]),
        ("Es gibt viele Beispiele, z.B. Äpfel und Birnen. Das ist gut.",
         ["Es gibt viele Beispiele, z.B. Äpfel und Birnen.", "Das ist gut."]),
        ("Er sagte: „Wir kommen.“ Dann ging er.", ["Er sagte: „Wir kommen.“", "Dann ging er."]),
        ("Sowohl in „Fürchtet sie!“ (2006) als auch später. Ende.",
         ["Sowohl in „Fürchtet sie!“ (2006) als auch später.", "Ende."]),
        # Spanish and English
        ("¿Dónde está? ¡Aquí! El Sr. García llegó.", ["¿Dónde está?", "¡Aquí!", "El Sr. García llegó."]),
        ("The U.S. Army arrived. Dr. Smith said so. J. Sullivan agreed.",
         ["The U.S. Army arrived.", "Dr. Smith said so.", "J. Sullivan agreed."]),
        ('Se conoce como la Guerra de los Siete Años. "Siete años" se refiere a Europa.',
         ["Se conoce como la Guerra de los Siete Años.", '"Siete años" se refiere a Europa.']),
        ('He left. "Hello there," she said. (See below.) She left.',
         ["He left.", '"Hello there," she said.', "(See below.)", "She left."]),
        # scripts without capitals: Arabic (؟ too), Hindi (the danda), Chinese and Japanese (no space after
        # 。！？, but a quote that goes on after its closing mark is not cut), Hebrew
        ("ولد في المدينة المنورة عام 1958. عمل صحفيا في السعودية. أين ولد؟ في المدينة.",
         ["ولد في المدينة المنورة عام 1958.", "عمل صحفيا في السعودية.", "أين ولد؟", "في المدينة."]),
        ("वह दिल्ली में पैदा हुआ। उसने पढ़ाई की।", ["वह दिल्ली में पैदा हुआ।", "उसने पढ़ाई की।"]),
        ("本作以三大故事为主轴。此部份专门介绍角色！真的吗？是的。",
         ["本作以三大故事为主轴。", "此部份专门介绍角色！", "真的吗？", "是的。"]),
        ("「行きます。」と彼は言った。東京（日本の首都。）は大きい。 次の文。",
         ["「行きます。」と彼は言った。", "東京（日本の首都。）は大きい。", "次の文。"]),
        ("他说：“我们准备好了。”然后离开了。", ["他说：“我们准备好了。”然后离开了。"]),
        ("הוא נולד בתל אביב. הוא למד שם.", ["הוא נולד בתל אביב.", "הוא למד שם."]),
        # a line break ends a sentence even without punctuation (titles, lists)
        ("# Titre\nLe texte suit. Il continue.", ["# Titre", "Le texte suit.", "Il continue."]),
    ],
)
def test_sentence_boundaries(text: str, expected: list[str]) -> None:
    assert sentences_of(text) == expected


def test_sentence_offsets_include_no_surrounding_space() -> None:
    text = "  Première phrase.   Deuxième\u00a0phrase !\n\n  Troisième.  "
    doc = doc_of(text)
    spans = split_sentences(doc)
    assert [s.text for s in spans] == ["Première phrase.", "Deuxième\u00a0phrase !", "Troisième."]
    assert [s.paragraph for s in spans] == [1, 1, 2]
    for s in spans:
        assert text[s.start : s.end] == s.text


# ------------------------------------------------------------------------------- chunks


LONG_PARAGRAPH = " ".join(
    f"Phrase numéro {i} du long paragraphe parle du traité de paix et de ses suites." for i in range(1, 25)
)


def test_consecutive_chunks_of_a_long_paragraph_overlap() -> None:
    doc = doc_of(LONG_PARAGRAPH)
    chunks, sentences = chunk_document(doc, 300, 120)
    assert len(chunks) > 3
    check_spans(doc, chunks, sentences, 300)
    for a, b in pairwise(chunks):
        assert b.start < a.end, "no overlap"
        shared = doc.text[b.start : a.end]
        assert a.text.endswith(shared) and b.text.startswith(shared)
        assert len(shared) <= 120
        assert b.first_sentence < a.last_sentence  # the shared text is whole sentences


def test_no_overlap_when_chunk_overlap_is_zero() -> None:
    doc = doc_of(LONG_PARAGRAPH)
    chunks, sentences = chunk_document(doc, 300, 0)
    assert len(chunks) > 3
    check_spans(doc, chunks, sentences, 300)
    for a, b in pairwise(chunks):
        assert b.start > a.end
        assert b.first_sentence == a.last_sentence


def test_chunks_never_cross_paragraphs() -> None:
    text = "Premier paragraphe. Court.\n\nDeuxième paragraphe. Court aussi.\n \t\nTroisième. Fin."
    doc = doc_of(text)
    chunks, sentences = chunk_document(doc, 1200, 200)  # everything would fit in one chunk
    assert [c.text for c in chunks] == [
        "Premier paragraphe. Court.", "Deuxième paragraphe. Court aussi.", "Troisième. Fin."
    ]
    assert [c.paragraph for c in chunks] == [1, 2, 3]
    assert [(c.first_sentence, c.last_sentence) for c in chunks] == [(0, 2), (2, 4), (4, 6)]
    check_spans(doc, chunks, sentences, 1200)


def test_a_sentence_longer_than_a_chunk_is_cut_at_clauses_then_words() -> None:
    clauses = ", ".join(f"la clause numéro {i} du traité prévoit un échange de prisonniers" for i in range(30))
    text = f"Introduction courte. Le traité dit que {clauses}. Conclusion."
    doc = doc_of(text)
    chunks, sentences = chunk_document(doc, 200, 50)
    long_sentence = sentences[1]
    assert len(long_sentence.text) > 1000  # the sentence itself stays whole
    pieces = [c for c in chunks if c.start < long_sentence.end and c.end > long_sentence.start]
    assert len(pieces) >= 6
    check_spans(doc, chunks, sentences, 200)
    # together the pieces cover the sentence, and no word is cut in two
    covered: set[int] = set()
    for c in pieces:
        covered.update(range(c.start, c.end))
        assert c.start == 0 or not text[c.start - 1].isalnum()
        assert c.end == len(text) or not text[c.end].isalnum()
    assert set(range(long_sentence.start, long_sentence.end)) - covered <= {
        i for i in range(len(text)) if text[i].isspace()
    }


def test_a_word_longer_than_a_chunk_is_cut_anyway() -> None:
    text = "Avant. " + "x" * 450 + " après la chaîne."
    doc = doc_of(text)
    chunks, sentences = chunk_document(doc, 100, 20)
    check_spans(doc, chunks, sentences, 100)
    assert sum(c.text.count("x") for c in chunks) >= 450


@pytest.mark.parametrize(
    "text",
    [
        "aaaaz. B.\na",  # a repeated fragment used to make a later sentence unreachable
        "z. B.z. B.z. B.\nz. B.",
        "Ja. Ja. Ja. Ja. Ja. Ja. Ja. Ja. Ja. Ja. Ja. Nein. Ja. Ja. Ja. Ja. Ja. Ja. Ja. Ja.",
        "| a | b |\n| a | b |\n| a | b |\n| a | c |\n| a | b |",
    ],
)
@pytest.mark.parametrize(("size", "overlap"), [(10, 0), (10, 5), (20, 10)])
def test_repeated_text_gets_exact_spans(text: str, size: int, overlap: int) -> None:
    doc = doc_of(text)
    chunks, sentences = chunk_document(doc, size, overlap)
    check_spans(doc, chunks, sentences, size)


def test_sentence_ids_start_where_asked() -> None:
    doc = doc_of("Une phrase. Une autre.\n\nUn deuxième paragraphe.")
    chunks, sentences = chunk_document(doc, 1200, 200, first_sentence_id=40)
    assert [(c.first_sentence, c.last_sentence) for c in chunks] == [(40, 42), (42, 43)]
    assert len(sentences) == 3


def test_random_text_keeps_every_invariant() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    parts = ["Le", "M.", "Mme", "St-", "z. B.", "3.", "3 900", "(", ")", "«", "»", "’", "Élan", "x" * 30,
             " ", " ", "\u00a0", "\n", "\n\n", "\r\n", "\t", "\ufeff", ".", ". ", "! ", "? ", "…", "; ", ", "]

    @hypothesis.settings(max_examples=150, deadline=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.lists(st.sampled_from(parts), min_size=1, max_size=80),
                      st.sampled_from([10, 25, 60, 200]), st.sampled_from([0.0, 0.2, 0.5]))
    def check(pieces: list[str], size: int, overlap_ratio: float) -> None:
        try:
            doc = doc_of("".join(pieces))
        except ValueError:  # nothing but blanks
            return
        chunks, sentences = chunk_document(doc, size, int(size * overlap_ratio))
        check_spans(doc, chunks, sentences, size)

    check()


# ------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"chunk_size": 500, "chunk_overlap": 600},
         r"^chunk_overlap \(600\) must be smaller than chunk_size \(500\)$"),
        ({"chunk_size": 500, "chunk_overlap": 500},
         r"^chunk_overlap \(500\) must be smaller than chunk_size \(500\)$"),
        ({"chunk_overlap": -1}, r"^chunk_overlap \(-1\) must not be negative$"),
        ({"chunk_size": 0}, r"^chunk_size must be a whole number of at least 1, not 0$"),
        ({"top_k": 2.5}, r"^top_k must be a whole number of at least 1, not 2\.5$"),
        ({"max_question_chars": 0}, r"^max_question_chars must be a whole number of at least 1, not 0$"),
        ({"lexical": "sometimes"}, r"^lexical must be one of never, same-language, always, not 'sometimes'$"),
        ({"lexical_weight": -0.1}, r"must not be negative"),
        ({"terms_pass": "three"}, r"^terms_pass must be one of one, two, not 'three'$"),
        ({"model": "  "}, r"^model must name an encoder, e\.g\. 'e5', 'use' or 'e5\+use'$"),
    ],
)
def test_settings_validation_messages(changes: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings(**changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):  # also a ValueError, for callers that expect one
        Settings().with_(**changes)


def test_settings_round_trip_and_build_key() -> None:
    s = Settings(model="hash", chunk_size=800, chunk_overlap=100, top_k=3)
    assert Settings.from_dict({**s.to_dict(), "unknown_future_field": 1}) == s
    assert s.build_key() == {"model": "hash", "chunk_size": 800, "chunk_overlap": 100, "chunk_vectors": "encoded",
                           "latent_terms": True, "terms_pass": "one"}
    assert s.with_(top_k=None) == s  # None means "not given" (CLI options)
