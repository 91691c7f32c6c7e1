"""Builds on a real local Ray cluster (a head and two worker nodes on loopback), against local builds."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FAKE
from helpers import SEED_DOC, SEED_QUESTIONS, MakeIndex

from rag.encoders import HashEncoder, create_encoder
from rag.errors import ClusterError
from rag.index import background_sentences, build_index, current_build, open_index
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.settings import Settings

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

from rag.distributed import RayEncoder, ray_environment  # noqa: E402 - after the skip


@dataclass(frozen=True)
class LocalCluster:
    """What the tests need of the running cluster: where to reach it and which nodes are workers."""

    address: str
    worker_ids: frozenset[str]


@pytest.fixture(scope="module")
def cluster(loopback_only: None) -> Iterator[LocalCluster]:
    """A head without CPUs (so every actor runs on a worker node) and two one-CPU worker nodes."""
    ray_environment()
    from ray.cluster_utils import Cluster

    running = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [running.add_node(num_cpus=1) for _ in range(2)]
    running.wait_for_nodes()
    try:
        yield LocalCluster(running.address, frozenset(w.node_id for w in workers))
    finally:
        running.shutdown()


def _ray(cluster: LocalCluster, batch: int = 8, spec: str = "hash", **kwargs: Any) -> RayEncoder:
    return RayEncoder(spec, cluster.address, create_encoder(spec, threads=1), batch=batch, **kwargs)


def _descends_from_us(pid: int) -> bool:
    """Whether ``pid`` was started (through the raylets) by this test process: never kill anyone else's actor."""
    me = os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])  # field 4: the parent
        except (OSError, ValueError, IndexError):
            return False
        if pid == me:
            return True
    return False


def _actor_pids() -> list[int]:
    """This cluster's Ray Data encoding actors (their process title names the actor class)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if b"MapWorker(MapBatches(_Embed))" in handle.read() and _descends_from_us(int(entry)):
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _answers(index_dir: Path) -> list[tuple[str | None, list[tuple[str, int, int]]]]:
    import json

    pipe = Pipeline.open(index_dir, FAKE, HashEncoder())
    out = []
    for line in SEED_QUESTIONS.read_text().splitlines():
        answer = pipe.ask(json.loads(line)["question"])
        out.append((answer.text, [(c.doc, c.start, c.end) for c in answer.sentences]))
    return out


@pytest.mark.slow  # 6.2 s, the cluster's start 7.7 s more
def test_a_ray_build_equals_a_local_build_and_uses_both_nodes(cluster: LocalCluster, tmp_path: Path, seeds_copy: Path,
                                                              make_index: MakeIndex) -> None:
    loaded = load_documents(seeds_copy)
    make_index(seeds_copy, index="local")
    encoder = _ray(cluster)
    report = build_index(loaded, tmp_path / "ray", FAKE, encoder)
    local, remote = open_index(tmp_path / "local"), open_index(tmp_path / "ray")
    assert remote.chunk_vectors is not None and local.chunk_vectors is not None  # FAISS keeps them on disk
    assert remote.sentence_vectors is not None and local.sentence_vectors is not None
    np.testing.assert_allclose(remote.chunk_vectors, local.chunk_vectors, atol=1e-6)
    np.testing.assert_allclose(remote.sentence_vectors, local.sentence_vectors, atol=1e-6)
    np.testing.assert_allclose(remote.background, local.background, atol=1e-6)
    assert set(encoder.last_nodes) == cluster.worker_ids  # both worker nodes encoded, the head none
    background = len(set(background_sentences([d.lang for d in loaded.documents])))
    assert sum(encoder.last_nodes.values()) == report.chunks + report.sentences + background
    assert _answers(tmp_path / "ray") == _answers(tmp_path / "local")


@pytest.mark.slow  # 8.3 s
def test_an_incremental_ray_build_embeds_only_the_new_document(cluster: LocalCluster, tmp_path: Path,
                                                               seeds_copy: Path) -> None:
    encoder = _ray(cluster)
    first = build_index(load_documents(seeds_copy), tmp_path / "index", FAKE, encoder)
    sent_first = sum(encoder.last_nodes.values())
    (seeds_copy / "new.txt").write_text("Une phrase nouvelle sur Prague.\n\nEt une autre sur Genève.", encoding="utf-8")
    second = build_index(load_documents(seeds_copy), tmp_path / "index", FAKE, encoder)
    assert (second.embedded_documents, second.reused_documents) == (1, 1)
    new_texts = (second.chunks - first.chunks) + (second.sentences - first.sentences)
    background = sent_first - first.chunks - first.sentences
    assert sum(encoder.last_nodes.values()) == new_texts + background


def _kill_an_actor_on_first_progress(every_actor: bool = False) -> Any:
    """A progress callback that SIGKILLs one encoding actor (or all of them) once work has begun."""
    killed: list[int] = []

    def progress(done: int, total: int) -> None:
        if done > 0 and not killed:
            pids = _actor_pids()
            assert pids, "no encoding actor found to kill"
            for pid in pids if every_actor else pids[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    return progress, killed


# The kill tests encode with e5, one text per batch: hashing finishes every batch before the
# first result reaches the driver, so there would be no work left in flight to kill.
E5 = Settings(model="e5")


@pytest.mark.model
def test_a_killed_actor_is_restarted_and_the_build_completes(cluster: LocalCluster, tmp_path: Path, seeds_copy: Path,
                                                             make_index: MakeIndex) -> None:
    loaded = load_documents(seeds_copy)
    make_index(seeds_copy, index="local", settings=E5, encoder=create_encoder("e5", threads=1))
    progress, killed = _kill_an_actor_on_first_progress()
    build_index(loaded, tmp_path / "ray", E5, _ray(cluster, batch=1, spec="e5"), progress=progress)
    assert killed
    remote, local = open_index(tmp_path / "ray").sentence_vectors, open_index(tmp_path / "local").sentence_vectors
    assert remote is not None and local is not None
    np.testing.assert_allclose(remote, local, atol=1e-4)


@pytest.mark.model
def test_the_latent_terms_of_a_ray_build_are_made_with_its_vectors_on_the_worker_nodes(
        cluster: LocalCluster, tmp_path: Path, seeds_copy: Path, monkeypatch: pytest.MonkeyPatch,
        make_index: MakeIndex) -> None:
    loaded = load_documents(seeds_copy)
    make_index(seeds_copy, index="local", settings=E5, encoder=create_encoder("e5", threads=1))
    encoder = _ray(cluster, spec="e5")
    passes: list[str] = []
    run = RayEncoder._run

    def counted(self: RayEncoder, ray: Any, texts: list[str], what: str, *args: Any) -> None:
        passes.append(what)
        run(self, ray, texts, what, *args)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("latent terms made in the driver")

    monkeypatch.setattr(RayEncoder, "_run", counted)
    monkeypatch.setattr("rag.encoders.E5Encoder.encode_terms", refuse)  # this process only, not the actors
    report = build_index(loaded, tmp_path / "ray", E5, encoder)
    assert passes == ["both"]  # one pass over the cluster: its actors started once
    background = len(set(background_sentences([d.lang for d in loaded.documents])))
    assert set(encoder.last_nodes) <= cluster.worker_ids
    assert sum(encoder.last_nodes.values()) == report.chunks + report.sentences + background
    local, remote = open_index(tmp_path / "local"), open_index(tmp_path / "ray")
    assert local.sentence_terms is not None and remote.sentence_terms is not None
    assert local.sentence_vectors is not None and remote.sentence_vectors is not None
    np.testing.assert_allclose(remote.sentence_vectors, local.sentence_vectors, atol=1e-4)

    def dense(terms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        ids, weights = np.asarray(terms[0]), np.asarray(terms[1], dtype=np.float64)
        out = np.zeros((len(ids), 16384))
        for row in range(len(ids)):
            held = weights[row] != 0
            out[row, ids[row][held]] = weights[row][held]
        return out

    got, want = dense(remote.sentence_terms), dense(local.sentence_terms)
    assert got.shape[0] == report.sentences > 0
    assert ((got * want).sum(axis=1) > 0.999).all()  # unit rows: the cosine of the two
    # outside a build, the terms of texts are a pass of their own, on the cluster as well
    texts = [remote.sentences[i].text for i in range(5)]
    alone = encoder.encode_terms(texts)
    assert passes == ["both", "terms"] and set(encoder.last_nodes) <= cluster.worker_ids
    assert ((dense(alone) * want[:5]).sum(axis=1) > 0.999).all()


@pytest.mark.model
def test_without_retries_a_killed_actor_fails_the_build_and_keeps_the_index(cluster: LocalCluster, tmp_path: Path,
                                                                           seeds_copy: Path,
                                                                           make_index: MakeIndex) -> None:
    make_index(seeds_copy, settings=E5, encoder=create_encoder("e5", threads=1))
    before = current_build(tmp_path / "index")
    (seeds_copy / "new.txt").write_text(SEED_DOC.read_text(encoding="utf-8") + "\n\nEncore.", encoding="utf-8")
    # Every actor: with one killed, Ray Data sometimes finished the work on the survivor (seen
    # once in CI), so the failure path was only tested by chance.
    progress, killed = _kill_an_actor_on_first_progress(every_actor=True)
    with pytest.raises(ClusterError, match=r"the build failed on the Ray cluster .*previous index is still in use"):
        build_index(load_documents(seeds_copy), tmp_path / "index", E5, _ray(cluster, batch=1, spec="e5", retries=0),
                    progress=progress)
    assert killed
    assert current_build(tmp_path / "index") == before
    assert len(open_index(tmp_path / "index").documents) == 1


def test_an_unreachable_cluster_is_one_line_in_seconds(loopback_only: None, tmp_path: Path, seeds_copy: Path) -> None:
    with pytest.raises(ClusterError, match=r"cannot reach the Ray cluster at '127\.0\.0\.1:1' .*ray start --head"):
        build_index(load_documents(seeds_copy), tmp_path / "index", FAKE,
                    RayEncoder("hash", "127.0.0.1:1", HashEncoder()))
    assert not (tmp_path / "index" / "CURRENT").exists()
