#!/usr/bin/env python3
"""Inference peers for latentcam's edge benchmark: the runtimes a
user would pick instead of tract — onnxruntime and LiteRT (ai-edge-litert) —
on the same model files and the same input tensor.

It is a line protocol on stdin/stdout, so one driver can interleave these
peers with tract in the same run (round k: tract, then every peer, then round
k+1 …) instead of timing them one after another:

    -> {"cmd": "load", "runtime": "onnxruntime", "precision": "int8", "threads": 1,
        "tensor": "/tmp/input.f32"}   (optional: the exact input tensor, raw f32 NCHW)
    <- {"ok": true, "key": "onnxruntime-int8-t1", "version": "1.32.0"}
    -> {"cmd": "run", "key": "onnxruntime-int8-t1", "iters": 10}
    <- {"ok": true, "seconds": [0.0123, ...], "checksum": 12.34}
    -> {"cmd": "quit"}

Model files: `<models>/efficientnet-lite0/encoder-{fp32,int8}.onnx` (committed)
and `<tflite-dir>/encoder-{fp32,int8}.tflite` (written into the cache by
`models/build/build.sh --tflite`). The input is the real photo the tract
bench uses, preprocessed like the recipe ((x - 127) / 128, centre crop 224).

Runs inside the recipe's venv (`models/build/build.sh` creates it; it pins
onnxruntime and ai-edge-litert). Standalone check:
    python3 bench/peers.py --selftest
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODEL_DIR = "efficientnet-lite0"
PHOTO = REPO / "models" / MODEL_DIR / "fixtures" / "originals" / "butterfly.jpg"


def input_tensor(photo: Path = PHOTO) -> np.ndarray:
    """NCHW float32, the recipe's preprocessing (shorter side 256, centre 224)."""
    with Image.open(photo) as im:
        im = im.convert("RGB")
        w, h = im.size
        if w <= h:
            nw, nh = 256, (h * 256) // w
        else:
            nw, nh = (w * 256) // h, 256
        left, top = (nw - 224) // 2, (nh - 224) // 2
        crop = im.resize((nw, nh), Image.Resampling.BILINEAR).crop((left, top, left + 224, top + 224))
    x = (np.asarray(crop, dtype=np.float32) - np.float32(127.0)) / np.float32(128.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


class Peer:
    """One loaded model in one runtime at one thread count."""

    def __init__(self, runtime: str, precision: str, threads: int, models: Path, tflite_dir: Path,
                 tensor: Path | None = None):
        # The driver passes the exact tensor tract runs (raw little-endian
        # float32, NCHW 1x3x224x224); standalone, the photo is preprocessed here.
        if tensor is not None:
            self.x = np.fromfile(tensor, dtype="<f4").reshape(1, 3, 224, 224)
        else:
            self.x = input_tensor()
        if runtime == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            path = models / MODEL_DIR / f"encoder-{precision}.onnx"
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name
            self.version = ort.__version__
            self.run_once = lambda: self.session.run(None, {self.input: self.x})[0]
        elif runtime == "litert":
            from ai_edge_litert import interpreter as litert

            path = tflite_dir / f"encoder-{precision}.tflite"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: run models/build/build.sh --tflite first")
            it = litert.Interpreter(model_path=str(path), num_threads=threads)
            it.allocate_tensors()
            inp, out = it.get_input_details()[0], it.get_output_details()[0]
            nhwc = np.ascontiguousarray(self.x.transpose(0, 2, 3, 1))

            def run_once():
                it.set_tensor(inp["index"], nhwc)
                it.invoke()
                return it.get_tensor(out["index"])

            self.run_once = run_once
            try:
                from importlib.metadata import version

                self.version = version("ai-edge-litert")
            except Exception:  # noqa: BLE001 - a version string is only for the report
                self.version = "unknown"
        else:
            raise ValueError(f"unknown runtime {runtime!r} (onnxruntime, litert)")
        self.key = f"{runtime}-{precision}-t{threads}"
        self.run_once()  # warm-up: allocation, kernel selection

    def run(self, iters: int) -> tuple[list[float], float]:
        seconds = []
        checksum = 0.0
        for _ in range(iters):
            t = time.perf_counter()
            y = self.run_once()
            seconds.append(time.perf_counter() - t)
            checksum = float(np.sum(y))
        return seconds, checksum


def serve(models: Path, tflite_dir: Path) -> int:
    peers: dict[str, Peer] = {}
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            cmd = req["cmd"]
            if cmd == "quit":
                break
            if cmd == "load":
                tensor = Path(req["tensor"]) if req.get("tensor") else None
                peer = Peer(req["runtime"], req["precision"], int(req["threads"]), models, tflite_dir, tensor)
                peers[peer.key] = peer
                reply = {"ok": True, "key": peer.key, "version": peer.version}
            elif cmd == "run":
                seconds, checksum = peers[req["key"]].run(int(req["iters"]))
                reply = {"ok": True, "seconds": seconds, "checksum": checksum}
            else:
                reply = {"ok": False, "error": f"unknown command {cmd!r}"}
        except Exception as e:  # noqa: BLE001 - every failure goes back to the driver
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    return 0


def selftest(models: Path, tflite_dir: Path) -> int:
    """Loads every peer it can and prints a median per peer (not a benchmark)."""
    for runtime in ("onnxruntime", "litert"):
        for precision in ("fp32", "int8"):
            try:
                peer = Peer(runtime, precision, 1, models, tflite_dir)
            except Exception as e:  # noqa: BLE001
                print(f"{runtime}-{precision}: unavailable: {e}")
                continue
            seconds, _ = peer.run(5)
            print(f"{peer.key} ({peer.version}): median {1000 * float(np.median(seconds)):.2f} ms")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=REPO / "models")
    ap.add_argument("--tflite-dir", type=Path, default=None,
                    help="where the .tflite encoders are (default: $LATENTCAM_CACHE/models/efficientnet-lite0)")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()
    if args.tflite_dir is None:
        import os

        cache = Path(os.environ.get("LATENTCAM_CACHE", Path.home() / ".cache" / "latentcam"))
        args.tflite_dir = cache / "models" / MODEL_DIR
    if args.selftest:
        return selftest(args.models, args.tflite_dir)
    return serve(args.models, args.tflite_dir)


if __name__ == "__main__":
    sys.exit(main())
