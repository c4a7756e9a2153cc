#!/usr/bin/env python3
"""Assembles the pieces scripts/bench.sh measured into one markdown report
(bench/results/<date>-<machine>.md). Standard library only: it runs on the
system python. Every figure comes from a file the run wrote; nothing here is
a constant.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
from pathlib import Path


def criterion(root: Path, group: str, function: str) -> dict | None:
    """Median ns per iteration and the throughput of one criterion bench."""
    base = root / group / function
    est = base / "new" / "estimates.json"
    if not est.is_file():
        return None
    median_ns = json.loads(est.read_text())["median"]["point_estimate"]
    bench = json.loads((base / "new" / "benchmark.json").read_text())
    throughput = bench.get("throughput") or {}
    return {"id": bench.get("full_id", f"{group}/{function}"), "median_ns": median_ns, "throughput": throughput}


def all_criterion(root: Path) -> list[dict]:
    out = []
    for est in sorted(root.glob("**/new/estimates.json")):
        base = est.parent.parent
        rel = base.relative_to(root)
        if rel.parts[0] == "report":
            continue
        got = criterion(root, str(rel.parent), rel.name)
        if got:
            out.append(got)
    return out


def per_second(c: dict) -> str:
    t = c["throughput"]
    secs = c["median_ns"] / 1e9
    if "Bytes" in t:
        return f"{t['Bytes'] / secs / 1e6:,.0f} MB/s"
    if "BytesDecimal" in t:
        return f"{t['BytesDecimal'] / secs / 1e6:,.0f} MB/s"
    if "Elements" in t:
        return f"{t['Elements'] / secs:,.3g} elem/s"
    return "–"


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--criterion", type=Path, required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--cpu", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", type=int, default=0)
    a = ap.parse_args()
    w = a.work

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except Exception:  # noqa: BLE001 - a report outside a checkout still works
            return "unknown"

    lines: list[str] = []
    say = lines.append
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    say(f"# latentcam benchmarks — {a.machine}\n")
    dirty = " plus uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    say(f"{now}, commit `{git('rev-parse', '--short', 'HEAD')}`{dirty}, CPU {a.cpu}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores. Written by `just bench` (scripts/bench.sh).")
    if a.quick:
        say("\n**Quick smoke run (`--quick`): too few samples for figures; do not quote.**")
    say("")

    # 1. edge
    say("## 1. Edge: encoder latency against the peers (same model, same input, interleaved)\n")
    say("EfficientNet-Lite0 encoder, one 224×224 photo (the recipe's butterfly fixture); every "
        "configuration runs once per round, rounds interleave all of them. tract's extra threads "
        "split its matrix products (tract-linalg `multithread-mm`); depthwise convolutions stay on "
        "one thread.\n")
    say((w / "edge.md").read_text())
    edge = json.loads((w / "edge.json").read_text())

    def median_ms(runtime: str, precision: str, threads: int, peer: bool = False) -> float | None:
        # latentcam's LiteRT backend and the Python LiteRT peer share the
        # runtime name; `peer` tells them apart.
        for r in edge["rows"]:
            if (r["runtime"] == runtime and r["precision"] == precision and r["threads"] == threads
                    and bool(r.get("peer")) == peer and r["seconds"]):
                return 1e3 * statistics.median(r["seconds"])
        return None

    def fastest_peer_ms(threads: int) -> float | None:
        peers = [1e3 * statistics.median(r["seconds"]) for r in edge["rows"]
                 if r.get("peer") and r["threads"] == threads and r["seconds"]]
        return min(peers) if peers else None

    say("Against the Python LiteRT peer (same model file, same input, interleaved):\n")
    say("| threads | latentcam LiteRT int8 ms | Python LiteRT int8 ms | ratio (target ≤ 1.10) |")
    say("|---:|---:|---:|---:|")
    for t in sorted({r["threads"] for r in edge["rows"]}):
        ours, theirs = median_ms("litert", "int8", t), median_ms("litert", "int8", t, peer=True)
        if ours and theirs:
            say(f"| {t} | {ours:.2f} | {theirs:.2f} | **{ours / theirs:.2f}** |")
    say("")

    # 2. pipeline
    p = json.loads((w / "pipeline.json").read_text())
    host_rss = json.loads((w / "host-rss.json").read_text())["host_peak_rss_kib"]
    backend, precision = p.get("backend", "tract"), p.get("precision", "fp32")
    bare = median_ms(backend, precision, 1)
    peer = fastest_peer_ms(1)
    say("## 2. The whole edge pipeline against bare inference\n")
    say(f"`latentcam-edge` on its default backend ({backend} {precision}, 1 inference thread) "
        "replaying vtest.avi unpaced (decode on the capture thread → preprocess on its own → "
        "encode → U8 codec → spool → TCP) into a loopback `latentcam-host serve` running every "
        "head and recording.\n")
    t = p["timings"]
    say("| | frames | frames/s | ms/frame | peak RSS |")
    say("|---|---:|---:|---:|---:|")
    say(f"| pipeline | {p['encoded']} | {p['fps']:.1f} | {1e3 / p['fps']:.2f} | edge {p['peak_rss_kib'] / 1024:.0f} MiB, host {host_rss / 1024:.0f} MiB |")
    if bare:
        say(f"| bare inference (§1, {backend} {precision}, 1 thread) | | {1e3 / bare:.1f} | {bare:.2f} | |")
    if peer:
        say(f"| fastest peer's bare inference (§1, 1 thread) | | {1e3 / peer:.1f} | {peer:.2f} | |")
    if bare:
        say(f"\nThe pipeline runs at **{p['fps'] / (1e3 / bare):.2f}×** the bare inference rate of its "
            "own backend (target ≥ 0.95)" + (f" and **{p['fps'] / (1e3 / peer):.2f}×** the fastest "
            "peer's (target ≥ 0.9)." if peer else "."))
    say("\nPer stage (p50 / p99 µs): " + ", ".join(
        f"{k} {t[k]['p50_us']} / {t[k]['p99_us']}" for k in ("capture", "preprocess", "encode", "codec", "send", "end_to_end")))
    s = p["session"]
    say(f"\nSession: {s['sent']} sent, {s['sent_from_spool']} from the spool, {p['dropped']} frames dropped "
        f"(latest-frame-wins queue; 0 expected unpaced), {s['link_dropped']} lost on the link.\n")
    c_path = w / "contention.json"
    if c_path.exists():
        c = json.loads(c_path.read_text())
        say("The encoder shares the machine with the pipeline's other stages. The peer (Python LiteRT "
            "int8, 1 thread, pinned to CPU 0) with CPU 1 idle, running an arithmetic loop, or copying "
            "a 64 MiB buffer over and over (bench/contention.py, median of 3 interleaved rounds):\n")
        say("| CPU 1 | median ms | × idle |")
        say("|---|---:|---:|")
        for kind, label in (("idle", "idle"), ("alu", "arithmetic loop"), ("mem", "memory copies")):
            say(f"| {label} | {c[kind]:.2f} | {c[kind] / c['idle']:.2f} |")
        say("")

    # 3. host
    say("## 3. Host: ingest and every head\n")
    runs = [json.loads(x) for x in (w / "host-runs.jsonl").read_text().splitlines() if x.strip()]
    say("`latentcam-host replay` of the serve's recording: the file ingest (decode, session checks) "
        "on one thread feeding the heads (ImageNet top-3, anomaly, few-shot with 2 enrolled labels, "
        "search index) on another. Best of 3 runs each.\n")
    say("| cores | latents | seconds | latents/s |")
    say("|---|---:|---:|---:|")
    best = {}
    for label in ("one-core", "all-cores"):
        mine = [r for r in runs if r["label"] == label]
        if mine:
            b = min(mine, key=lambda r: r["seconds"])
            best[label] = b["latents"] / b["seconds"]
            say(f"| {label} (`{'taskset -c 0' if label == 'one-core' else 'all'}`) | {b['latents']} | {b['seconds']:.3f} | {best[label]:,.0f} |")
    say("\nThe seconds include process start and loading the heads (about 0.1 s).\n")
    crit = a.criterion
    head1 = criterion(crit, "imagenet-head", "logits-1")
    head32 = criterion(crit, "imagenet-head", "logits-batch-32")
    sg32 = criterion(crit, "imagenet-head", "sgemm-32x1280x1000")
    sgbig = criterion(crit, "imagenet-head", "sgemm-1024")
    if head1 and head32 and sgbig:
        def gflops(c: dict) -> float:
            return c["throughput"]["Elements"] / c["median_ns"]
        peak = gflops(sgbig)
        say("ImageNet head (1280 → 1000) against the machine's single-precision matrix multiply "
            "(matrixmultiply's sgemm), in the same criterion process (`host/benches/heads.rs`):\n")
        say("| kernel | median | GFLOP/s | × sgemm 1024³ |")
        say("|---|---:|---:|---:|")
        for name, c in (("head, 1 latent (matrix-vector)", head1), ("head, batch of 32", head32),
                        ("sgemm 32×1280×1000", sg32), ("sgemm 1024×1024×1024", sgbig)):
            if c:
                say(f"| {name} | {fmt_ns(c['median_ns'])} | {gflops(c):.1f} | {gflops(c) / peak:.2f} |")
        say("")

    # 4. criterion
    say("## 4. Criterion suites (hot pieces)\n")
    say("| bench | median | throughput |")
    say("|---|---:|---:|")
    for c in all_criterion(crit):
        say(f"| {c['id']} | {fmt_ns(c['median_ns'])} | {per_second(c)} |")
    say("\nRerun: `cargo bench -p latentcam-wire --bench wire`, `cargo bench -p latentcam-host --bench heads`, "
        "`cargo bench -p latentcam-firmware --bench encoder`.\n")

    # 5. link
    say("## 5. Link: bytes per frame against fidelity\n")
    link = (w / "link" / "link.md").read_text().splitlines()
    say("\n".join(x for x in link if not x.startswith("# ")))
    say(f"\n![bytes per frame against ImageNet top-1 agreement]({a.out.stem}-link.png)\n")
    a.out.write_text("\n".join(lines) + "\n")
    print(f"report: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
