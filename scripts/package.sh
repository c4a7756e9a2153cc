#!/usr/bin/env bash
# Builds the edge program for a device target and packs it with what a
# device needs: the binary, the model files its manifest names for the edge
# (encoders; host-side files stay out), a configuration, the systemd unit
# and an installer.
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
features="v4l"
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
    cargo build --profile "$profile" --locked --target "$target" -p latentcam-firmware \
        ${features:+--features "$features"}
fi
[ -x "$binary" ] || { echo "package: $binary missing (build it, or drop --no-build)" >&2; exit 1; }

name="latentcam-edge-$version-$target"
stage="dist/$name"
rm -rf "$stage"
mkdir -p "$stage/models"
cp "$binary" "$stage/latentcam-edge"
# The manifest and the edge's files: every committed encoder.
python3 - "$stage/models" <<'PY'
import os, shutil, sys, tomllib
dest = sys.argv[1]
with open("models/manifest.toml", "rb") as f:
    manifest = tomllib.load(f)
shutil.copy("models/manifest.toml", dest)
for entry in manifest["file"]:
    if entry.get("role") == "encoder" and entry.get("committed", True):
        src = os.path.join("models", entry["path"])
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
