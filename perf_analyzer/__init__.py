"""perf_analyzer sweeps against the served ensemble (NVIDIA's real binary, driven well)."""
