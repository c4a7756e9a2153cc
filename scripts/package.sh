#!/usr/bin/env bash
# Builds the edge program for a device target and packs it with what a
# device needs: the binary, the model files its manifest names for the edge
# (encoders; host-side files stay out), a configuration, the systemd unit
# and an installer. On aarch64 the build has LiteRT (its default backend):
# the package then carries libLiteRt.so (installed in /usr/lib/latentcam,
# where the binary's rpath looks) and the .tflite encoders from the build
# cache (`bash models/build/build.sh --tflite` writes them).
#
#   scripts/package.sh aarch64-unknown-linux-gnu [--no-build] [--features v4l]
#                      [--profile device]
#
# Writes dist/latentcam-edge-<version>-<target>.tar.gz and prints its path.
# --no-build packs an existing $CARGO_TARGET_DIR/<target>/<profile>/latentcam-edge
# (target/ by default). Releases use the `device` profile (the default);
# CI's package check packs its `device-check` build (scripts/cross.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: package.sh TARGET [--no-build] [--features LIST] [--profile NAME]}"
shift
build=1
case "$target" in
    aarch64-*) features="v4l,litert" ;;
    *) features="v4l" ;;
esac
profile="device"
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --features) features="$2"; shift ;;
        --profile) profile="$2"; shift ;;
        *) echo "package: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
binary="${CARGO_TARGET_DIR:-target}/$target/$profile/latentcam-edge"
if [ "$build" = 1 ]; then
    case ",$features," in
        *,litert,*)
            LITERT_LIB_DIR="$(bash scripts/fetch-litert.sh "${target%%-*}")"
            export LITERT_LIB_DIR LITERT_NO_DOWNLOAD=1
            ;;
    esac
    cargo build --profile "$profile" --locked --target "$target" -p latentcam-firmware \
        ${features:+--features "$features"}
fi
[ -x "$binary" ] || { echo "package: $binary missing (build it, or drop --no-build)" >&2; exit 1; }

name="latentcam-edge-$version-$target"
stage="dist/$name"
rm -rf "$stage"
mkdir -p "$stage/models"
cp "$binary" "$stage/latentcam-edge"
# A binary built with LiteRT needs its library, and the .tflite encoders.
litert=0
if readelf -d "$binary" | grep -q 'NEEDED.*libLiteRt\.so'; then
    litert=1
    mkdir -p "$stage/lib"
    cp "$(bash scripts/fetch-litert.sh "${target%%-*}")/libLiteRt.so" "$stage/lib/"
fi
# The manifest and the edge's files: every committed encoder, and with
# LiteRT the .tflite ones from the build cache (sha256-checked here).
python3 - "$stage/models" "$litert" "${LATENTCAM_CACHE:-$HOME/.cache/latentcam}" <<'PY'
import hashlib, os, shutil, sys, tomllib
dest, litert, cache = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
with open("models/manifest.toml", "rb") as f:
    manifest = tomllib.load(f)
shutil.copy("models/manifest.toml", dest)
for entry in manifest["file"]:
    if entry.get("role") != "encoder":
        continue
    if entry.get("committed", True):
        src = os.path.join("models", entry["path"])
    elif litert and entry.get("format") == "tflite":
        src = os.path.join(cache, "models", entry["path"])
        if not os.path.isfile(src):
            sys.exit(f"package: {src} is missing: run `bash models/build/build.sh --tflite`")
        with open(src, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != entry["sha256"]:
                sys.exit(f"package: {src} does not match the manifest's sha256: rebuild it")
    else:
        continue
    os.makedirs(os.path.join(dest, os.path.dirname(entry["path"])), exist_ok=True)
    shutil.copy(src, os.path.join(dest, entry["path"]))
PY
cp firmware/deploy/edge.toml "$stage/edge.toml"
cp firmware/deploy/latentcam-edge.service "$stage/"
cp firmware/deploy/install.sh "$stage/"
cp README.md "$stage/"
tar -C dist -czf "dist/$name.tar.gz" "$name"
rm -rf "$stage"
echo "dist/$name.tar.gz"
