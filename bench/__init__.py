"""The benchmark: speed, quality and scale in one command, ``python bench/run.py`` (bench/README.md).

- ``run``: the entry point (options, the order of the parts, one subprocess per measurement);
- ``systems``: this project against the LangChain and txtai baselines on one bench set;
- ``encoding``: raw encoder throughput against whole index builds;
- ``vectors``: the vector scale curve (exact, HNSW, IVF indexes on synthetic vectors);
- ``pipeline_scale``: the whole project on synthetic corpora;
- ``common``: shared paths, bench-set preparation, scoring with ``rag.evaluate.metrics``;
- ``render``: the Markdown report.
"""
