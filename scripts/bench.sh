#!/usr/bin/env bash
# The benchmarks, one command on a fresh machine (`just bench`):
#   1. edge: tract fp32/int8 interleaved with onnxruntime and LiteRT
#      (bench/peers.py in the model recipe's venv), 1 thread and all cores;
#   2. pipeline: the edge program replaying vtest.avi unpaced into a loopback
#      `latentcam-host serve` (frames/s against bare inference, peak RSS),
#      and the peer's bare inference with the other core busy
#      (bench/contention.py);
#   3. host: the serve's recording replayed through ingest and every head on
#      one core (taskset) and on all cores; the ImageNet head's GFLOP/s against
#      sgemm in the same criterion process;
#   4. criterion suites: wire (codecs, framing, stream decoding), heads,
#      preprocessing and encoder;
#   5. link: bytes per frame against fidelity, wire codecs against JPEG.
# Writes bench/results/<date>-<machine>.md and <date>-<machine>-link.png.
# Timings are only ever measured here, never asserted by a test.
#   scripts/bench.sh            everything (about 15 minutes on 2 cores)
#   scripts/bench.sh --quick    a short smoke of every step (not for figures)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
quick=0
[ "${1:-}" = "--quick" ] && quick=1
cache="${LATENTCAM_CACHE:-$HOME/.cache/latentcam}"
export LATENTCAM_CACHE="$cache"
target="${CARGO_TARGET_DIR:-$repo/target}"
video=/usr/share/doc/opencv-doc/examples/data/vtest.avi

bash scripts/setup.sh --bench
# The recipe's venv carries onnxruntime and ai-edge-litert; --tflite writes
# the .tflite encoders LiteRT runs (translated from the committed ONNX).
bash models/build/build.sh --tflite
python="$cache/models-venv/bin/python"

# latentcam's LiteRT backend beside the Python peers: the pinned libLiteRt.so.
litert_dir="$(bash scripts/fetch-litert.sh)"
export LITERT_LIB_DIR="$litert_dir" LITERT_NO_DOWNLOAD=1
export LD_LIBRARY_PATH="$litert_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo build --release --locked -p latentcam-firmware -p latentcam-host -p latentcam-bench \
    --features latentcam-bench/litert,latentcam-firmware/litert
bin="$target/release"

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
cpu="${cpu:-$(uname -m)}"
slug="$(echo "$cpu" | tr 'A-Z' 'a-z' | sed 's/([^)]*)//g; s/cpu @.*//; s/[^a-z0-9]\+/-/g; s/^-//; s/-$//' | cut -c1-40)"
machine="$(uname -m)-$(nproc)c-$slug"
stamp="$(date -u +%F)-$machine"
# A smoke run never overwrites a real result.
[ $quick = 1 ] && stamp="$stamp-quick"
work="$(mktemp -d "${TMPDIR:-/tmp}/latentcam-bench.XXXXXX")"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
echo "bench: $stamp, scratch in $work"

# --- 1. edge speed ------------------------------------------------------------
rounds=7 iters=10
[ $quick = 1 ] && rounds=1 iters=2
"$bin/latentcam-bench" edge --rounds $rounds --iters $iters --python "$python" \
    --tflite-dir "$cache/models/efficientnet-lite0" \
    --md "$work/edge.md" --json "$work/edge.json"

# --- 2. pipeline into a loopback host -----------------------------------------
frames=1500
[ $quick = 1 ] && frames=40
store="$work/fewshot.bin"
originals=models/efficientnet-lite0/fixtures/originals
"$bin/latentcam-host" enroll --label butterfly --store "$store" "$originals/butterfly.jpg" >/dev/null
"$bin/latentcam-host" enroll --label squirrel --store "$store" "$originals/squirrel_cls.jpg" >/dev/null
"$bin/latentcam-host" serve --tcp 127.0.0.1:0 --http 127.0.0.1:0 --http-token-file "$work/http.token" \
    --record "$work/records" \
    --jsonl "$work/serve.jsonl" --anomaly --fewshot "$store" --index "$work/serve.idx" \
    2>"$work/serve.log" &
serve=$!
port=""
for _ in $(seq 100); do
    port="$(sed -n 's/.*tcp 127.0.0.1:0 bound to 127.0.0.1:\([0-9]*\).*/\1/p' "$work/serve.log")"
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$work/serve.log"; echo "bench: the host did not start" >&2; exit 1; }
"$bin/latentcam-edge" --source replay --input "$video" --unpaced --loop --max-frames $frames \
    --codec u8 --link tcp --address "127.0.0.1:$port" --spool "$work/spool" \
    --drain-seconds 30 --report "$work/pipeline.json" 2>"$work/edge.log"
host_rss_kib="$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/$serve/status)"
kill -INT $serve
wait $serve || true
echo "{\"host_peak_rss_kib\": ${host_rss_kib:-0}}" >"$work/host-rss.json"
# The peer's bare inference with the other core idle, busy with arithmetic,
# or streaming memory (what the pipeline's other stages do beside the
# encoder): how much of the gap to bare inference the machine itself costs.
rounds=3
[ $quick = 1 ] && rounds=1
"$python" bench/contention.py --rounds $rounds --json "$work/contention.json" >/dev/null

# --- 3. host: ingest + every head, one core and all cores ---------------------
ls "$work"/records/* >/dev/null 2>&1 || { echo "bench: the host wrote no recording" >&2; exit 1; }
cat "$work"/records/* >"$work/all.lcr"
host_run() { # label, then the command prefix
    local label="$1"; shift
    local t0=$EPOCHREALTIME
    "$@" "$bin/latentcam-host" replay "$work/all.lcr" --jsonl "$work/replay-$label.jsonl" \
        --anomaly --fewshot "$store" --index "$work/replay-$label.idx" 2>"$work/replay-$label.log"
    local t1=$EPOCHREALTIME
    echo "{\"label\": \"$label\", \"seconds\": $(awk "BEGIN{print $t1 - $t0}"), \"latents\": $(wc -l <"$work/replay-$label.jsonl")}" \
        >>"$work/host-runs.jsonl"
}
for _ in 1 2 3; do
    host_run one-core taskset -c 0
    host_run all-cores env
done

# --- 4. criterion suites ------------------------------------------------------
crit=()
[ $quick = 1 ] && crit=(--quick)
cargo bench --locked -p latentcam-wire --bench wire -- "${crit[@]}" >"$work/criterion-wire.txt" 2>&1
cargo bench --locked -p latentcam-host --bench heads -- "${crit[@]}" >"$work/criterion-heads.txt" 2>&1
cargo bench --locked -p latentcam-firmware --bench encoder -- "${crit[@]}" preprocess >"$work/criterion-encoder.txt" 2>&1

# --- 5. link: bytes against fidelity ------------------------------------------
every=4
[ $quick = 1 ] && every=100
"$bin/latentcam-bench" link --video "$video" --every $every --out "$work/link"

# --- report -------------------------------------------------------------------
mkdir -p bench/results
python3 bench/report.py --work "$work" --criterion "$target/criterion" --machine "$machine" \
    --cpu "$cpu" --out "bench/results/$stamp.md" --quick $quick
cp "$work/link/link.png" "bench/results/$stamp-link.png"
echo "bench: wrote bench/results/$stamp.md and bench/results/$stamp-link.png"
