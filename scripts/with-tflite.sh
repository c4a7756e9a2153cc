#!/usr/bin/env bash
# Runs a cargo command that builds the `tflite` or `litert` feature, e.g.
#   bash scripts/with-tflite.sh cargo test -p latentcam-firmware --features tflite
#
# For `litert` it fetches the pinned libLiteRt.so (scripts/fetch-litert.sh)
# and names its directory in LITERT_LIB_DIR (the build links it) and
# LD_LIBRARY_PATH (the test binaries load it).
#
# Why a wrapper: tflitec's build script either builds TensorFlow Lite with
# bazel from a git clone, or copies TFLITEC_PREBUILT_PATH and downloads the
# C headers from GitHub; both need more than crates.io. Given DOCS_RS=1 it
# instead unpacks the x86_64 libtensorflowlite_c.so (TF 2.6, with XNNPACK)
# and the bindings the crate itself carries. Cargo cannot scope an
# environment variable to one package's build script, so this sets DOCS_RS=1
# for the wrapped command only (not in .cargo/config.toml, so no other build
# sees it) and first checks that no other package of the dependency graph
# reads DOCS_RS, so the variable changes nothing else.
#
# With TFLITEC_PREBUILT_PATH (or TFLITEC_PREBUILT_PATH_<TARGET>) set, as for
# an ARM build, DOCS_RS is left unset and tflitec uses that library: see
# firmware/TFLITE.md.
#
# After the command, the library is copied beside the binaries of each
# profile built here (target/<profile>/), where their rpath ($ORIGIN, from
# firmware/build.rs) finds it when they are run directly. cargo run/test/bench
# find it without that (cargo puts the build script's output directory on
# LD_LIBRARY_PATH).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ $# -eq 0 ]; then
    sed -n '2,3p' "$0" >&2
    exit 2
fi

litert_dir="$(bash "$root/scripts/fetch-litert.sh")"
export LITERT_LIB_DIR="$litert_dir" LITERT_NO_DOWNLOAD=1
export LD_LIBRARY_PATH="$litert_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if env | grep -q '^TFLITEC_PREBUILT_PATH'; then
    echo "with-tflite: using the prebuilt library in TFLITEC_PREBUILT_PATH*" >&2
    exec "$@"
fi

case "$(uname -m)" in
    x86_64) ;;
    *)
        echo "with-tflite: the library tflitec carries is for x86_64 only; on $(uname -m) set" \
            "TFLITEC_PREBUILT_PATH to a libtensorflowlite_c.so (firmware/TFLITE.md)" >&2
        exit 1
        ;;
esac
for arg in "$@"; do
    case "$arg" in
        --target | --target=*)
            echo "with-tflite: cross builds need TFLITEC_PREBUILT_PATH_<TARGET> (firmware/TFLITE.md)" >&2
            exit 1
            ;;
    esac
done
command -v unzip >/dev/null || {
    echo "with-tflite: tflitec unpacks its library with unzip: apt-get install unzip" >&2
    exit 1
}

# Every package the tflite build compiles, and which of them mention DOCS_RS.
host="$(rustc -vV | sed -n 's/^host: //p')"
manifests="$(cd "$root" && cargo metadata --format-version 1 --locked \
    --features latentcam-firmware/tflite,latentcam-firmware/litert \
    --filter-platform "$host" |
    python3 -c 'import json, sys; print("\n".join(p["manifest_path"] for p in json.load(sys.stdin)["packages"]))')"
readers="$(while IFS= read -r manifest; do
    dir="$(dirname "$manifest")"
    case "$dir" in "$root"*) continue ;; esac
    grep -rlI --include='*.rs' -e 'DOCS_RS' "$dir" 2>/dev/null | head -n1
done <<<"$manifests" | grep -v '/tflitec-0\.5\.2/' || true)"
if [ -n "$readers" ]; then
    echo "with-tflite: these dependencies read DOCS_RS too, so setting it would change their builds:" >&2
    echo "$readers" >&2
    echo "with-tflite: build tflitec with TFLITEC_PREBUILT_PATH instead (firmware/TFLITE.md)" >&2
    exit 1
fi

status=0
DOCS_RS=1 "$@" || status=$?

target_dir="${CARGO_TARGET_DIR:-$root/target}"
for profile_dir in "$target_dir"/*/; do
    # The same for LiteRT, where its backend was built.
    if ls -d "$profile_dir"build/litert-sys-* >/dev/null 2>&1 &&
        ! cmp -s "$litert_dir/libLiteRt.so" "$profile_dir/libLiteRt.so"; then
        install -m 0755 "$litert_dir/libLiteRt.so" "$profile_dir/libLiteRt.so"
    fi
    lib="$(ls -t "$profile_dir"build/tflitec-*/out/libtensorflowlite_c.so 2>/dev/null | head -n1 || true)"
    if [ -n "$lib" ] && ! cmp -s "$lib" "$profile_dir/libtensorflowlite_c.so"; then
        install -m 0755 "$lib" "$profile_dir/libtensorflowlite_c.so"
    fi
done
exit "$status"
