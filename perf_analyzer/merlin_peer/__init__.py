"""merlin-systems as the measured peer: the same pipeline, built and exported the way a
Merlin user would, served by the same tritonserver and driven by the same perf_analyzer.
`make perf-report` measures it in the same run as the project's ensemble; on its own:

    python -m perf_analyzer.merlin_peer --artifacts artifacts --out results/merlin_peer \
        [--measure --concurrency 1,4]

    operators.py         the adapter operators merlin-systems 23.08 needs (each says why)
    libtorch_standin.py  the exported `pytorch_libtorch` models served on the Python backend
    build.py             the graph, exported as merlin-systems' executor repository
    measure.py           that repository served and swept with perf_analyzer
    __main__.py          the command above

What the peer does not do, compared with the project's `recommender`: no per-request
top_k, exclusions or feature overrides and no seen-item filter (merlin-systems has no
operator for them), and no dynamic batching (the executor is exported without it). Its
load therefore carries less work per request than the project's.

Nothing is imported here: every stand-in model's Python-backend stub imports this package
on its way to libtorch_standin, and must not pay for merlin's imports.
"""
