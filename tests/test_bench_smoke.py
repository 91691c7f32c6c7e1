"""The benchmark command at its smallest size and its pure helpers.

No assertion here depends on how fast anything ran: the machine may be shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, SHARED_BENCH

from rag.evaluate import metrics

if str(ROOT) not in sys.path:  # bench/ is a package of the repo, not of the installed distribution
    sys.path.insert(0, str(ROOT))

from bench import common, encoding, vectors
from bench.vectors import ClusteredVectors, exact_top_k, ivf_nlist, vector_stats


def _errors(value: object, where: str = "") -> list[str]:
    """Every worker error anywhere in the results."""
    if isinstance(value, dict):
        found = [f"{where}: {value['error']}"] if "error" in value else []
        for key, item in value.items():
            found += _errors(item, f"{where}/{key}")
        return found
    return []


@pytest.mark.slow  # 43 s here: the whole benchmark, each part in its own interpreter
@pytest.mark.skipif(not (SHARED_BENCH / "xquad-en-de").is_dir(), reason="needs ../shared/bench/xquad-en-de")
def test_benchmark_runs_at_its_smallest_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--models", "hash", "--skip-baselines",
         "--cache", str(tmp_path / "cache"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    assert _errors(results) == []
    assert "| ours[hash] |" in proc.stdout
    assert "## Vector scale curve" in proc.stdout and "## Whole-project scale curve" in proc.stdout

    query = results["systems"]["ours[hash]"]["query"]
    assert query["questions"] == results["bench"]["questions_count"] > 0
    assert 0 <= query["passage_hit@1"] <= 1
    stages = {"encode", "encode.hash", "lexical", "search", "fuse", "read", "decide", "answer", "total"}
    assert stages <= set(query["stages"])
    assert "| ours[hash] | total |" in proc.stdout
    assert set(results["encoding"]["raw"]) == {"threads2", "procs2"}
    assert set(results["encoding"]["query"]) == {"1", "2"}
    builds = results["encoding"]["build"]
    assert set(builds) == {"default", "processes=1"}
    assert builds["default"]["chunks"] == builds["processes=1"]["chunks"] > 0
    assert all(b["fraction_of_raw"] > 0 for b in builds.values())
    ratio = results["index_ratio"]  # rag index --full over one raw e5 paragraph pass: chunk vectors x latent terms
    assert set(ratio["median_ratio"]) == set(encoding.BUILD_MODES)
    assert all(v > 0 for v in ratio["median_ratio"].values()) and ratio["default"] == "encoded"
    assert ratio["paragraphs"] > 0 and "## Build cost: `rag index --full` / one raw e5 pass" in proc.stdout

    size = results["scale"]["sizes"]["1000"]
    assert [s["recall@10"] for s in size["flat"]["serve"]["settings"]] == [1.0]  # exact search is its own truth
    for method in ("hnsw", "ivf", "ivfsq8"):
        assert all(0 <= s["recall@10"] <= 1 for s in size[method]["serve"]["settings"])
    assert results["pipeline_scale"]["sizes"]["1000"]["build"]["chunks"] > 0

    many = results["concurrency"]  # serving many: every level, batched and one question per model call
    assert "## Serving many" in proc.stdout
    for mode in ("batched", "unbatched"):
        assert [r["askers"] for r in many[mode]] == [1, 2, 4, 8]
        assert all(r["answers"] > 0 and not r["errors"] for r in many[mode])


def test_the_bench_scores_with_the_library_metrics() -> None:
    # one definition of percentile, answer matching and overlap: rag eval and the bench agree
    assert encoding.percentile is vectors.percentile is metrics.percentile
    assert common.contains_answer is metrics.contains_answer
    assert common.overlaps is metrics.overlaps
    rows = [{"answers": ["308"], "doc": "d", "context": "x"}, {"answers": ["309"], "doc": "d", "context": "x"}]
    cases = [common.score_case(rows[0], {"d": "x"}, ("d", 0, 1), "Die Verteidigung gab 308 Punkte ab", None),
             common.score_case(rows[1], {"d": "x"}, ("d", 5, 9), "308", None)]
    for case, total in zip(cases, (10.0, 30.0), strict=True):
        case["ms"] = {"total": total}
    summary = common.summarise_cases(cases)
    assert (summary["answer_accuracy"], summary["passage_hit@1"]) == (0.5, 0.5)
    assert summary["total_p95_ms"] == 29.0  # interpolated as rag eval does (nearest rank would say 30)
    assert summary["stages"] == {"total": {"p50_ms": 20.0, "p95_ms": 29.0}}


def test_exact_top_k_matches_brute_force() -> None:
    gen = ClusteredVectors(32, centres=50)
    vectors = gen.sample(1000, seed=1)
    queries = gen.sample(7, seed=2)
    found = exact_top_k(vectors, queries, 10, block=128)  # several blocks
    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(np.sort(found, axis=1), np.sort(expected, axis=1))


def test_clustered_vectors_are_unit_deterministic_and_not_isotropic() -> None:
    gen = ClusteredVectors(64, centres=100)
    a, b = gen.sample(500, seed=3), gen.sample(500, seed=3)
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    stats = vector_stats(a)
    assert stats["random_pair_cosine"] > 0.2  # a shared direction, as real embeddings have
    assert stats["nearest_cosine"] > stats["random_pair_cosine"]


def test_ivf_list_count_grows_with_the_corpus() -> None:
    assert ivf_nlist(1_000) == 64
    assert ivf_nlist(1_000_000) == 2048
    assert ivf_nlist(10) == 16

