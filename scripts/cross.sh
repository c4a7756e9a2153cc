#!/usr/bin/env bash
# Device builds for 64-bit (aarch64) and 32-bit (armv7) Raspberry Pi OS and
# their checks without a device: Debian's cross gcc links, qemu-user runs.
# Called by scripts/test.sh; scripts/setup.sh installs the toolchains.
#
# 1. Both targets build with the `device` profile (LTO, panic=abort,
#    stripped) with tract and V4L2; sizes are printed.
# 2. aarch64: the wire crate's tests and the firmware's unit, source, spool,
#    link and doctor tests run under qemu-aarch64. Not the pipeline and
#    encoder-parity suites: tract runs one frame in ~32 s under qemu-user
#    (28 ms natively), and those suites encode hundreds of frames; step 3
#    covers inference on ARM. Serial tests are ignored under qemu
#    (serialport's TCGETS2 ioctl fails there); they run natively.
# 3. Smoke runs, aarch64 and armv7: the ARM edge's pipeline replays two real
#    photos through tract into a recording; the x86 host compares it with
#    the x86 edge's recording of the same photos (cosine ≥ 0.999).
# 4. The aarch64 package: contents, a staged install, the packaged binary's
#    doctor under qemu, `systemd-analyze verify` of the unit, and a deploy
#    dry run.
#
#   CROSS_ARMV7_TESTS=1   also run the test suites under qemu-arm (slow)
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

A=aarch64-unknown-linux-gnu
V=armv7-unknown-linux-gnueabihf
declare -A QEMU=(
    [$A]="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
    [$V]="qemu-arm-static -L /usr/arm-linux-gnueabihf"
)
cache="${LATENTCAM_CACHE:-$HOME/.cache/latentcam}"
out="${CARGO_TARGET_DIR:-target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step "device builds: $A and $V (profile device, features v4l)"
for t in $A $V; do
    cargo build --profile device --locked --target "$t" -p latentcam-firmware --features v4l
done
for t in $A $V; do
    bytes=$(stat -c %s "$out/$t/device/latentcam-edge")
    awk -v t="$t" -v b="$bytes" 'BEGIN { printf "size %-32s %9d bytes (%.1f MiB)\n", t, b, b / 1048576 }'
done

run_tests() {
    local t="$1"
    export LATENTCAM_TEST_RUNNER="${QEMU[$t]}"
    cargo test --locked --target "$t" -p latentcam-wire
    cargo test --locked --target "$t" -p latentcam-firmware \
        --lib --test sources --test spool --test links --test doctor
    unset LATENTCAM_TEST_RUNNER
}
step "$A: wire and firmware tests under qemu-user"
run_tests $A
if [ "${CROSS_ARMV7_TESTS:-0}" = 1 ]; then
    step "$V: wire and firmware tests under qemu-user"
    run_tests $V
fi

photos=(models/efficientnet-lite0/fixtures/originals/butterfly.jpg "$cache/foolbox-imagenet/imagenet_00_243.jpg")
edge_to() {
    # edge_to RECORDING COMMAND...: the pipeline over the photos into a file.
    local out="$1"; shift
    "$@" --models models --device-id smoke --source replay --input "$work/photos" \
        --unpaced --link file --link-path "$out" --no-spool
}
mkdir -p "$work/photos"
cp "${photos[@]}" "$work/photos/"
cargo build --locked -p latentcam-firmware -p latentcam-host
edge_to "$work/x86.lcr" "$out/debug/latentcam-edge"
for t in $A $V; do
    step "smoke, $t: the ARM edge under qemu against the x86 edge, same photos"
    # shellcheck disable=SC2086
    edge_to "$work/$t.lcr" ${QEMU[$t]} "$out/$t/device/latentcam-edge"
    "$out/debug/latentcam-host" compare --models models "$work/$t.lcr" "$work/x86.lcr"
done

step "package $A: contents, staged install, doctor, systemd-analyze, deploy dry run"
package=$(bash scripts/package.sh $A --no-build | tail -1)
tar -tzf "$package"
mkdir -p "$work/unpacked" "$work/root"
tar -C "$work/unpacked" -xzf "$package"
DESTDIR="$work/root" sh "$work/unpacked"/*/install.sh
# shellcheck disable=SC2086
${QEMU[$A]} "$work/root/usr/bin/latentcam-edge" doctor --config "$work/root/etc/latentcam/edge.toml" \
    --models "$work/root/usr/share/latentcam/models" --source replay --input "$work/photos" \
    --link file --link-path "$work/doctor.lcr" --spool "$work/spool" | tee "$work/doctor.txt"
grep -q '^OK    model ' "$work/doctor.txt"
unit="$work/root/etc/systemd/system/latentcam-edge.service"
sed -i "s|/usr/bin/latentcam-edge|$work/root/usr/bin/latentcam-edge|" "$unit"
verify=$(systemd-analyze verify "$unit" 2>&1) || { echo "$verify"; exit 1; }
[ -z "$verify" ] || { echo "systemd-analyze verify: $verify"; exit 1; }
echo "systemd-analyze verify: clean"
bash scripts/deploy.sh --dry-run --package "$package" pi@raspberrypi.local | tee "$work/deploy.txt"
grep -q "^+ scp $package pi@raspberrypi.local:" "$work/deploy.txt"
grep -q "install.sh" "$work/deploy.txt"
