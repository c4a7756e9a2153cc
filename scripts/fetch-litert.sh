#!/usr/bin/env bash
# Fetches LiteRT's C library for the `litert` encoder backend: the
# self-contained libLiteRt.so (it needs only glibc >= 2.27 and libstdc++)
# inside the PyPI wheel ai-edge-litert 2.1.4, pinned by SHA-256, for x86_64 or
# aarch64 (no wheel exists for armv7: use tract there). Prints the directory
# holding libLiteRt.so, for LITERT_LIB_DIR at build time and the library path
# at run time.
#
#   scripts/fetch-litert.sh [x86_64|aarch64]     (default: this machine)
#
# 2.1.4 exactly: litert-sys 0.2.1's bindings are for its headers, and a 2.3
# library crashes with them.
set -euo pipefail
VERSION=2.1.4
arch="${1:-$(uname -m)}"
case "$arch" in
    x86_64) sha=1bed8ccd8dfc4f2ec388bc79cb90920c261a244995ce378d396fb8967b7db640 ;;
    aarch64 | arm64)
        arch=aarch64
        sha=f2f07d27211a6b64ed374733bcbdd78dcf0cdc70de5c5f7d0ce7f198d4890a23
        ;;
    *)
        echo "fetch-litert: LiteRT ships no library for $arch (x86_64 and aarch64 only); use the tract backend" >&2
        exit 1
        ;;
esac
cache="${LATENTCAM_CACHE:-$HOME/.cache/latentcam}"
dest="$cache/litert/$VERSION/$arch"
if [ -f "$dest/libLiteRt.so" ]; then
    echo "$dest"
    exit 0
fi
wheel="$cache/sources/ai_edge_litert-$VERSION-cp311-cp311-manylinux_2_27_$arch.whl"
mkdir -p "$cache/sources" "$dest"
if [ ! -f "$wheel" ]; then
    echo "fetch-litert: fetching ai-edge-litert==$VERSION ($arch) from PyPI" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform "manylinux_2_27_$arch" --python-version 3.11 \
        "ai-edge-litert==$VERSION" -d "$cache/sources" >&2
fi
echo "$sha  $wheel" | sha256sum --check --quiet >&2
python3 - "$wheel" "$dest" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    data = z.read("ai_edge_litert/libLiteRt.so")
tmp = os.path.join(dest, "libLiteRt.so.tmp")
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, os.path.join(dest, "libLiteRt.so"))
PY
echo "$dest"
