#!/usr/bin/env python3
"""How much bare inference slows when the other core is busy.

The edge pipeline runs the encoder on one core while decoding, preprocessing,
the link and (in `just bench`) the host share the other. This measures the
peer alone in that situation: Python LiteRT int8, 1 thread, pinned to CPU 0,
median latency over 300 inferences, with CPU 1
  - idle,
  - running an arithmetic loop (`alu`: no memory traffic),
  - copying a 64 MiB buffer over and over (`mem`: the memory traffic that
    decoding and preprocessing frames cause, exaggerated),
interleaved for a few rounds. Needs 2 CPUs and the recipe's venv:

    ~/.cache/latentcam/models-venv/bin/python bench/contention.py [--json FILE]

`just bench` runs it after the pipeline and reports it beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("LATENTCAM_CACHE", Path.home() / ".cache" / "latentcam"))


def hog(kind: str, seconds: float) -> None:
    os.sched_setaffinity(0, {1})
    end = time.monotonic() + seconds
    if kind == "alu":
        x = 0
        while time.monotonic() < end:
            for i in range(100_000):
                x = (x * 31 + i) & 0xFFFF
        return
    a = np.ones(64 << 20, dtype=np.uint8)
    b = np.empty_like(a)
    while time.monotonic() < end:
        np.copyto(b, a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hog", choices=["alu", "mem"], help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the medians here")
    ap.add_argument("--tflite-dir", type=Path, default=CACHE / "models" / "efficientnet-lite0",
                    help="where models/build/build.sh --tflite wrote the .tflite encoders")
    args = ap.parse_args()
    if args.hog:
        hog(args.hog, args.seconds)
        return
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("contention.py: needs 2 CPUs")
    sys.path.insert(0, str(HERE))
    from peers import Peer

    os.sched_setaffinity(0, {0})
    # The same peer, input and timed call as the encoder table of `just bench`.
    peer = Peer("litert", "int8", 1, HERE.parent / "models", args.tflite_dir)

    def median_ms() -> float:
        peer.run(30)  # settle after the other core changed state
        seconds, _ = peer.run(300)
        return 1e3 * statistics.median(seconds)

    results: dict[str, list[float]] = {"idle": [], "alu": [], "mem": []}
    for _ in range(args.rounds):
        for kind in results:
            child = None
            if kind != "idle":
                child = subprocess.Popen([sys.executable, __file__, "--hog", kind, "--seconds", "30"])
                time.sleep(0.5)
            try:
                results[kind].append(median_ms())
            finally:
                if child:
                    child.kill()
                    child.wait()
    idle = statistics.median(results["idle"])
    print("| CPU 1 | median ms per round | median | × idle |")
    print("|---|---|---:|---:|")
    for kind, ms in results.items():
        m = statistics.median(ms)
        print(f"| {kind} | {', '.join(f'{v:.2f}' for v in ms)} | {m:.2f} | {m / idle:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({k: statistics.median(v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
