#!/usr/bin/env bash
# Rebuild (or verify) the committed model files under models/.
#   models/build/build.sh            rebuild everything into models/efficientnet-lite0/ + models/manifest.toml
#   models/build/build.sh --check    rebuild into a temp dir, compare with models/manifest.toml (exit 1 on mismatch)
#   models/build/build.sh --eval     only the 20-photo ImageNet evaluation + latency of the committed files
#   models/build/build.sh --tflite   only write the uncommitted .tflite encoders into $LATENTCAM_CACHE/models/
#                                    (translated from the committed ONNX files, sha256-checked; fast)
#   models/build/build.sh --fidelity int8 vs fp32 (cosine, top-1 agreement) on all 795 frames of vtest.avi and
#                                    foolbox's 20 photos, for onnxruntime and LiteRT (committed files; ~1 min)
# Extra flag: --no-eval (skip the evaluation after a build or check).
# Needs: Debian packages python3, python3-venv, ffmpeg, opencv-doc (installed here with
# apt-get if missing) and PyPI access. The venv lives in the cache, not in the tree.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LATENTCAM_CACHE:-$HOME/.cache/latentcam}"
venv="$cache/models-venv"
py=/usr/bin/python3

mode=build
args=()
for a in "$@"; do
  case "$a" in
    --check) mode=check ;;
    --eval) mode=eval ;;
    --tflite) mode=tflite ;;
    --fidelity) mode=fidelity ;;
    --no-eval) args+=(--no-eval) ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

# --- Debian packages ---------------------------------------------------------
need=()
for p in python3 python3-venv ffmpeg opencv-doc; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  echo "build.sh: installing Debian packages: ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "build.sh: need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- venv ----------------------------------------------------------------------
req="$here/requirements.txt"
stamp="$venv/.latentcam-requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$venv"
  mkdir -p "$cache"
  "$py" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "build.sh: installing $req into $venv" >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -q --only-binary=:all: -r "$req"
  echo "$want" > "$stamp"
fi

export LATENTCAM_CACHE="$cache"
export PYTHONHASHSEED=0
export PYTHONDONTWRITEBYTECODE=1  # leave no __pycache__ in the tree
exec "$venv/bin/python" "$here/recipe.py" "$mode" "${args[@]}"
