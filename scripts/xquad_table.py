"""Print a Markdown table of the XQuAD results that scripts/xquad_eval.sh wrote to bench/results/.

    python scripts/xquad_table.py [MODEL ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
SETS = ["xquad-en-de", "xquad-en-es", "xquad-de-de", "xquad-es-es"]
COLUMNS = [("retrieval", "doc_hit@1"), ("retrieval", "passage_hit@1"), ("retrieval", "passage_hit@5"),
           ("retrieval", "passage_mrr@10"), ("answers", "answer_accuracy"), ("answers", "first_sentence_accuracy"),
           ("answers", "citation_accuracy"), ("calibration", "ece"),
           ("abstention", "false_abstention_rate"), ("latency", "p50_ms"), ("latency", "p95_ms")]


def main(models: list[str]) -> None:
    print("| model | set | n | " + " | ".join(key for _, key in COLUMNS) + " | build_s |")
    print("|---" * (len(COLUMNS) + 4) + "|")
    for model in models:
        for name in SETS:
            path = RESULTS / f"{name}.{model}.json"
            if not path.exists():
                continue
            report = json.loads(path.read_text(encoding="utf-8"))
            cells = [report.get(group, {}).get(key) for group, key in COLUMNS]  # '-' for reports of older versions
            shown = ["-" if v is None else f"{v:.3f}" if isinstance(v, float) and v <= 1 else f"{v:.0f}"
                     for v in cells]
            build = report.get("build_s")
            print(f"| {model} | {name.removeprefix('xquad-')} | {report['n']} | " + " | ".join(shown)
                  + f" | {'reused' if build is None else f'{build:.0f}'} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["e5+use"])
