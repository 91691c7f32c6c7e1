#!/usr/bin/env bash
# `rag eval` on the four XQuAD development sets for one model; JSON results go to bench/results/.
#
#   scripts/xquad_eval.sh [MODEL] [BENCH_DIR]
#
# MODEL: any --model spec (default: the project's default model). BENCH_DIR: the folder holding
# xquad-*/ (default: ../shared/bench next to the repo). Per set and model it writes
#   bench/results/<set>.<model>.json             the report (`rag eval --json`)
#   bench/results/<set>.<model>.questions.jsonl  one row per question (`--out`), for error analysis
# and keeps the index in bench/results/index/<documents hash>.<model>/ (shared by sets over the same
# documents and reused while they are unchanged, so build_s is null on a rerun). SETS="xquad-de-de xquad-es-es" runs fewer sets; extra
# `rag eval` options go in RAG_EVAL_OPTS (e.g. RAG_EVAL_OPTS="--min passage_hit@1=0.8"); TAG names a
# variant in the file and index names (<set>.<model>.<TAG>.json), e.g.
#   TAG=encoded RAG_EVAL_OPTS="--set chunk_vectors=encoded" scripts/xquad_eval.sh
# and `python scripts/xquad_table.py e5+use.encoded` shows it.
# Exit status: 0 when every set ran (and met its limits), else the last failing status.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
model=${1:-$("$py" -c 'from rag.settings import DEFAULT_MODEL; print(DEFAULT_MODEL)')}
bench_arg=${2:-$repo/../shared/bench}
if [ ! -d "$bench_arg" ]; then
  echo "error: bench folder $bench_arg not found: give it as the second argument" >&2
  exit 2
fi
bench=$(cd "$bench_arg" && pwd)
sets=${SETS:-xquad-en-de xquad-en-es xquad-de-de xquad-es-es}
results=$repo/bench/results
name=$(printf '%s' "$model${TAG:+.$TAG}" | tr -c 'A-Za-z0-9.+_-' '_')
read -r -a extra <<< "${RAG_EVAL_OPTS:-}"
mkdir -p "$results"
cd "$repo"

status=0
for set in $sets; do
  dir=$bench/$set
  if [ ! -f "$dir/questions.jsonl" ] || [ ! -d "$dir/docs" ]; then
    echo "error: $dir has no questions.jsonl and docs/: is $bench the bench folder?" >&2
    status=2
    continue
  fi
  report=$results/$set.$name.json
  echo "== $set, model $model -> $report" >&2
  rc=0
  # sets over the same documents (en-de and de-de) share one index: named by the documents' content
  docs_key=$(cd "$dir/docs" && find . -type f -print0 | sort -z | xargs -0 sha1sum | sha1sum | cut -c1-12)
  "$py" -m rag.cli eval "$dir/questions.jsonl" --docs "$dir/docs" --index "$results/index/$docs_key.$name" \
    --model "$model" --json --out "$results/$set.$name.questions.jsonl" "${extra[@]}" > "$report.tmp" || rc=$?
  if [ -s "$report.tmp" ]; then  # also on exit 1 (a --min/--max not met): the report is complete
    mv "$report.tmp" "$report"
    "$py" - "$report" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1], encoding="utf-8"))
keys = [("retrieval", "doc_hit@1"), ("retrieval", "passage_hit@1"), ("retrieval", "passage_mrr@10"),
        ("answers", "answer_accuracy"), ("answers", "first_sentence_accuracy"), ("answers", "citation_accuracy"),
        ("calibration", "ece"), ("latency", "p50_ms")]
print("   n=%d  " % r["n"] + "  ".join("%s=%s" % (k, r[g][k]) for g, k in keys) + "  build_s=%s" % r["build_s"])
PY
  else
    rm -f "$report.tmp"
  fi
  [ "$rc" -eq 0 ] || status=$rc
done
exit "$status"
