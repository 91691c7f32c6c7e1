"""`rag eval`: a thin command over rag.evaluate; errors are one line and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from helpers import TINY_QUESTIONS

from rag.cli import main


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["eval", *map(str, args)])


def test_eval_json_builds_the_index_and_reports_every_metric(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    docs, questions = tiny
    result = run(questions, "--docs", docs, "--index", tmp_path / "ix", "--model", "hash", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n"] == 4 and data["model"] == "hash"
    assert data["retrieval"]["passage_hit@1"] == 1.0
    assert data["answers"] == {"answer_accuracy": 1.0, "first_sentence_accuracy": 1.0, "citation_accuracy": 1.0}
    # Answer.timings_ms keys
    stages = {"encode", "encode.hash", "lexical", "search", "fuse", "read", "decide", "answer", "total"}
    assert stages <= set(data["latency"]["stages"])
    assert data["latency"]["stages"]["total"]["p95_ms"] >= data["latency"]["stages"]["total"]["p50_ms"] > 0
    assert sum(b["count"] for b in data["calibration"]["reliability"]) == 4
    assert 0 <= data["calibration"]["ece"] <= 1
    assert data["abstention"]["abstain_recall"] == 1.0
    assert data["latency"]["p95_ms"] >= data["latency"]["p50_ms"] > 0
    assert isinstance(data["build_s"], float) and data["build_s"] >= 0  # a number: this run built the index
    assert set(data["by_lang"]) == {"en", "fr"}
    assert "Indexed 3 documents" in result.stderr


def test_eval_reuses_an_unchanged_index_and_prints_a_table(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    docs, questions = tiny
    assert run(questions, "--docs", docs, "--index", tmp_path / "ix", "--model", "hash").exit_code == 0
    again = run(questions, "--docs", docs, "--index", tmp_path / "ix")  # the index's model, reused
    assert again.exit_code == 0, again.output
    assert "index not rebuilt by this run" in again.stdout
    assert "Indexed" not in again.stderr
    rows = {line.split()[0]: line.split()[1:] for line in again.stdout.splitlines() if line.strip()}
    assert rows["answer_accuracy"] == ["1.000", "1.000", "1.000"]
    assert rows["n"] == ["4", "2", "2"]
    no_docs = run(questions, "--index", tmp_path / "ix", "--json")
    assert json.loads(no_docs.stdout)["build_s"] is None


def test_min_and_max_set_the_exit_code(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    docs, questions = tiny
    common = (questions, "--docs", docs, "--index", tmp_path / "ix", "--model", "hash", "--json")
    met = run(*common, "--min", "passage_hit@1=1", "--min", "answer_accuracy=0.9", "--max", "false_abstention_rate=0")
    assert met.exit_code == 0, met.output
    unmet = run(*common, "--min", "doc_hit@1=1", "--max", "p95_ms=0.001")
    assert unmet.exit_code == 1
    assert json.loads(unmet.stdout)["n"] == 4  # the report is still printed
    failures = [line for line in unmet.stderr.splitlines() if line.startswith("not met")]
    assert failures == [f"not met: p95_ms = {json.loads(unmet.stdout)['latency']['p95_ms']:g} "
                                         "> 0.001 (--max)"]


def test_unknown_min_key_lists_the_known_ones(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    _, questions = tiny
    result = run(questions, "--index", tmp_path / "ix", "--model", "hash", "--min", "hit@1=0.5")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown --min key 'hit@1': use one of doc_hit@1, doc_hit@3")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output


def test_a_bad_question_file_is_one_line_naming_the_line(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "Q?", "question_lang": "en", "answers": []}\n{oops\n',
                         encoding="utf-8")
    result = run(questions, "--index", tmp_path / "ix", "--model", "hash")
    assert result.exit_code == 2
    assert result.stderr == f"error: {questions} line 2: not valid JSON (Expecting property name enclosed in " \
                            "double quotes, column 2): write one JSON object per line\n"
    assert not (tmp_path / "ix").exists()  # refused before any index work


def test_a_gold_document_missing_from_the_index_is_refused(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    docs, _ = tiny
    questions = tmp_path / "other.jsonl"
    questions.write_text(json.dumps({**TINY_QUESTIONS[0], "doc": "elsewhere.txt"}) + "\n", encoding="utf-8")
    result = run(questions, "--docs", docs, "--index", tmp_path / "ix", "--model", "hash")
    assert result.exit_code == 2
    assert "line 1: doc 'elsewhere.txt' is not in the index" in result.stderr
    assert "Traceback" not in result.output


def test_without_docs_a_missing_index_says_how_to_build_it(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    _, questions = tiny
    result = run(questions, "--index", tmp_path / "none", "--model", "hash")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no index at ")


def test_out_writes_one_row_per_question(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    docs, questions = tiny
    out = tmp_path / "rows" / "eval.jsonl"
    result = run(questions, "--docs", docs, "--index", tmp_path / "ix", "--model", "hash", "--out", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [q["id"] for q in TINY_QUESTIONS]
    assert rows[0]["doc_rank"] == 1 and rows[0]["passage_rank"] == 1 and rows[0]["abstained"] is False
    assert rows[3]["abstained"] is True and rows[3]["answer"] is None
    assert all(isinstance(r["confidence"], float) and r["latency_ms"] > 0 for r in rows)


def test_eval_takes_the_index_and_model_from_the_environment(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    docs, questions = tiny
    env = {"RAG_INDEX": str(tmp_path / "from-env"), "RAG_MODEL": "hash", "RAG_SEEDS": None}
    result = CliRunner().invoke(main, ["eval", str(questions), "--docs", str(docs), "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "hash"
    assert (tmp_path / "from-env" / "CURRENT").is_file()
