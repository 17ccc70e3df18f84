"""Liveness for tritonserver with Python-backend models (exec probe, stdlib only).

Triton 2.51 neither restarts a Python-backend stub that died nor reports it: /v2/health/live
and the model's ready endpoint stay 200 while every request through that model fails. A
dead stub stays behind as a zombie child of tritonserver, so this probe fails when
  - GET /v2/health/live does not answer 200, or
  - any `triton_python_backend_stub` process is a zombie (state Z),
and the kubelet restarts the container. Usage:
    python3 liveness_probe.py [--port 8000] [--parent-pid PID]
"""

from __future__ import annotations

import argparse
import glob
import sys
import urllib.request

STUB_COMM = "triton_python_b"  # the kernel keeps the first 15 characters of the name


def dead_stubs(parent_pid: int | None) -> list[int]:
    dead = []
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as handle:
                stat = handle.read()
        except OSError:  # the process ended while we looked
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        state, ppid = fields[0], int(fields[1])
        if comm == STUB_COMM and state == "Z" and parent_pid in (None, ppid):
            dead.append(int(stat.split(" ", 1)[0]))
    return dead


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{args.port}/v2/health/live", timeout=args.timeout
        ) as response:
            if response.status != 200:
                print(f"/v2/health/live answered {response.status}")
                return 1
    except OSError as exc:
        print(f"/v2/health/live unreachable: {exc}")
        return 1
    dead = dead_stubs(args.parent_pid)
    if dead:
        print(f"dead Python-backend stub process(es) {dead}: their models fail every request")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
