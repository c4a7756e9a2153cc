#!/usr/bin/env bash
# Device builds for 64-bit (aarch64) and 32-bit (armv7) Raspberry Pi OS and
# their checks without a device: Debian's cross gcc links, qemu-user runs.
# Called by scripts/test.sh; scripts/setup.sh installs the toolchains.
#
# 1. Both targets build with the `device-check` profile (the `device`
#    profile without fat LTO, dependencies at opt-level 1; Cargo.toml says
#    why) with tract and V4L2, aarch64 with LiteRT too (its libLiteRt.so
#    from scripts/fetch-litert.sh, copied beside the binary, where the rpath
#    finds it); sizes are printed. `just package-*` builds releases with
#    `device` itself. The aarch64 test binaries of step 2 are built here
#    too, on the same dependency build.
# 2. aarch64 with LiteRT and otherwise default features (so the builds
#    without V4L2 and TFLite are tested too: their clear "rebuild with
#    --features" errors; LiteRT as in the device build, whose dependencies
#    it then shares: litert-sys's build script changes the features of the
#    build-time crates, and so of every proc macro): the wire
#    crate's tests, the model crate's and the firmware's unit tests, the source, spool, link and doctor
#    tests, and the tests of the backends compiled out, run under
#    qemu-aarch64. Not the pipeline and encoder-parity suites: tract runs
#    one frame in ~32 s under qemu-user (28 ms natively), and those suites
#    encode hundreds of frames; step 3 covers inference on ARM. Serial tests
#    are ignored under qemu (serialport's TCGETS2 ioctl fails there); they
#    run natively.
# 3. Smoke runs, aarch64 and armv7: the ARM edge's pipeline replays two real
#    photos on its default backend (aarch64: LiteRT int8; armv7: tract fp32)
#    into a recording; the x86 host compares it with the x86 edge's
#    recording of the same photos on the same backend (cosine ≥ 0.999).
# 4. The aarch64 package: contents, a staged install, the packaged binary's
#    doctor under qemu, `systemd-analyze verify` of the unit, the Debian
#    packages of both targets (scripts/deb.sh), and a deploy dry run.
#
#   scripts/cross.sh [build|check]   step 1 only, steps 2-4 only (after
#                                    `build`), or (no argument) all of them
#   CROSS_ARMV7_TESTS=1   also run the test suites under qemu-arm (slow)
#
# scripts/test.sh runs `build` in the background from its setup until the
# heavy tests (filling the cores the x86 build and tests leave idle), then `check`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/steps.sh

A=aarch64-unknown-linux-gnu
V=armv7-unknown-linux-gnueabihf
# aarch64 runs as the Raspberry Pi 4's core (Cortex-A72). qemu's default
# `max` CPU also offers SVE2 and SME, and there (qemu 7.2, LiteRT 2.1.4)
# the int8 encoder's latents come out wrong (cosine 0.07 to x86's), while
# every real core we target — Cortex-A72 (Pi 4), A76 (Pi 5), Neoverse-N1
# and `max,sve=off` — gives x86's latents.
declare -A QEMU=(
    [$A]="qemu-aarch64-static -cpu cortex-a72 -L /usr/aarch64-linux-gnu"
    [$V]="qemu-arm-static -L /usr/arm-linux-gnueabihf"
)
cache="${LATENTCAM_CACHE:-$HOME/.cache/latentcam}"
out="${CARGO_TARGET_DIR:-target}"
work="$(mktemp -d)"
trap 'steps_exit $?; rm -rf "$work"' EXIT
profile=device-check
mode="${1:-all}"
case "$mode" in
    build | check | all) ;;
    *) echo "cross: unknown mode $mode (build, check, or nothing for both)" >&2; exit 2 ;;
esac

# The integration tests that run under qemu: the wire crate's, the
# firmware's source, spool, link (one contract over every transport, MQTT
# included) and doctor suites, and the two tests of the TFLite backend
# compiled out (they encode nothing).
QEMU_TESTS=(golden:: roundtrip:: stream:: sources:: spool:: links:: link_suite:: doctor::
    encoder_backends::a_backend_without_its_feature_is_a_clear_error
    encoder_parity::tflite_without_feature_is_a_clear_error)
# Unit tests and examples of both crates, and their integration tests (one
# binary each), on the dependencies of the device build.
test_args() {
    echo --locked --profile "$profile" --target "$1" -p latentcam-wire -p latentcam-model -p latentcam-firmware
}

# The device builds' features: LiteRT where a library exists (aarch64).
declare -A FEATURES=(
    [$A]=latentcam-firmware/v4l,latentcam-firmware/litert
    [$V]=latentcam-firmware/v4l
)
# The test builds': the same LiteRT choice, without V4L2.
declare -A TEST_FEATURES=(
    [$A]=latentcam-firmware/litert
    [$V]=""
)
litert_aarch64="$(bash scripts/fetch-litert.sh aarch64)"
export LITERT_LIB_DIR="$litert_aarch64" LITERT_NO_DOWNLOAD=1
# Test binaries carry no rpath (the edge binary does): under qemu the
# guest's loader finds libLiteRt.so through LD_LIBRARY_PATH, set in the
# guest only, and only for the tests (the package check must find the
# library where the install put it).
declare -A TEST_QEMU=(
    [$A]="${QEMU[$A]} -E LD_LIBRARY_PATH=$litert_aarch64"
    [$V]="${QEMU[$V]}"
)
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="${TEST_QEMU[$A]}"

# The targets whose test suites run under qemu (armv7 only with
# CROSS_ARMV7_TESTS=1: its device build is checked by the smoke run).
targets=($A)
[ "${CROSS_ARMV7_TESTS:-0}" = 1 ] && targets+=($V)
tested() { [[ " ${targets[*]} " == *" $1 "* ]]; }

if [ "$mode" != check ]; then
    for t in $A $V; do
        step "device build $t (profile $profile, features ${FEATURES[$t]})"
        # For a target whose tests follow: with the wire crate and the
        # examples in the selection, cargo resolves the dependencies'
        # features as for the test build below (dev-dependencies enable a
        # few more, e.g. regex's Unicode tables), so that build compiles our
        # crates only, not tract again (it did: 13 minutes). Only the
        # features of dependencies differ from a release build; our code and
        # tract's are the same. A target without tests builds its programs
        # alone: the examples would build the dev-dependencies (criterion,
        # proptest) for nothing.
        extra=(--bins)
        tested "$t" && extra+=(--examples)
        # shellcheck disable=SC2046
        cargo build $(test_args "$t") --features "${FEATURES[$t]}" "${extra[@]}"
    done
    cp "$litert_aarch64/libLiteRt.so" "$out/$A/$profile/"
    for t in "${targets[@]}"; do
        step "$t: build the wire, model and firmware tests (features: ${TEST_FEATURES[$t]:-default})"
        # shellcheck disable=SC2046
        cargo test $(test_args "$t") ${TEST_FEATURES[$t]:+--features "${TEST_FEATURES[$t]}"} \
            --lib --examples --test it --no-run
    done
    [ "$mode" = build ] && exit 0
fi

for t in $A $V; do
    bytes=$(stat -c %s "$out/$t/$profile/latentcam-edge")
    awk -v t="$t" -v b="$bytes" 'BEGIN { printf "size %-32s %9d bytes (%.1f MiB)\n", t, b, b / 1048576 }'
done

run_tests() {
    local t="$1"
    local features=(${TEST_FEATURES[$t]:+--features "${TEST_FEATURES[$t]}"})
    export LATENTCAM_TEST_RUNNER="${TEST_QEMU[$t]}"
    # shellcheck disable=SC2046
    cargo test $(test_args "$t") "${features[@]}" --lib --examples
    # shellcheck disable=SC2046
    cargo test $(test_args "$t") "${features[@]}" --test it -- "${QEMU_TESTS[@]}"
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
# The x86 programs of the test build: the same command as scripts/test.sh's
# build (cargo-nextest runs `cargo test --no-run` with these arguments), so
# nothing is rebuilt after it. Not `cargo build --bins`: without the test
# targets cargo leaves the dev-dependencies' features out, which changes
# the features of shared dependencies, and it rebuilt tract (minutes).
bash scripts/with-tflite.sh cargo test --workspace --all-features --locked --no-run
# The x86 edge on each ARM build's default backend: LiteRT int8 (the x86
# default too) and tract fp32 (what armv7 runs, having no LiteRT).
edge_to "$work/x86-$A.lcr" "$out/debug/latentcam-edge"
edge_to "$work/x86-$V.lcr" "$out/debug/latentcam-edge" --backend tract --precision fp32
for t in $A $V; do
    step "smoke, $t: the ARM edge under qemu against the x86 edge, same photos and backend"
    # shellcheck disable=SC2086
    edge_to "$work/$t.lcr" ${QEMU[$t]} "$out/$t/$profile/latentcam-edge" 2>"$work/$t.log" ||
        { cat "$work/$t.log"; exit 1; }
    # The default backend is the one this step means to compare.
    want=$([ "$t" = $A ] && echo "backend=litert precision=int8" || echo "backend=tract precision=fp32")
    chosen=$(sed 's/\x1b\[[0-9;]*m//g' "$work/$t.log" | grep "encoder loaded" || true)
    echo "$t: $chosen"
    case "$chosen" in
        *"$want"*) ;;
        *) echo "cross: the $t edge did not choose $want by default" >&2; exit 1 ;;
    esac
    # The host of this build links the TFLite library too (the workspace
    # build with every feature turns it on for the firmware crate it uses)
    # but, unlike the edge, carries no rpath to the copy beside it.
    LD_LIBRARY_PATH="$out/debug${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$out/debug/latentcam-host" compare --models models "$work/$t.lcr" "$work/x86-$t.lcr"
done

step "smoke, $A as a Cortex-A76 (Raspberry Pi 5): LiteRT int8 against the x86 edge"
# The A76 has the dot-product instructions the A72 lacks, so XNNPACK takes
# other int8 kernels.
edge_to "$work/a76.lcr" qemu-aarch64-static -cpu cortex-a76 -L /usr/aarch64-linux-gnu \
    "$out/$A/$profile/latentcam-edge" 2>"$work/a76.log" || { cat "$work/a76.log"; exit 1; }
LD_LIBRARY_PATH="$out/debug${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$out/debug/latentcam-host" compare --models models "$work/a76.lcr" "$work/x86-$A.lcr"

step "package $A: contents, staged install, doctor, systemd-analyze, .debs, deploy dry run"
package=$(bash scripts/package.sh $A --no-build --profile "$profile" | tail -1)
tar -tzf "$package"
mkdir -p "$work/unpacked" "$work/root"
tar -C "$work/unpacked" -xzf "$package"
DESTDIR="$work/root" sh "$work/unpacked"/*/install.sh
# shellcheck disable=SC2086
${QEMU[$A]} "$work/root/usr/bin/latentcam-edge" doctor --config "$work/root/etc/latentcam/edge.toml" \
    --models "$work/root/usr/share/latentcam/models" --source replay --input "$work/photos" \
    --link file --link-path "$work/doctor.lcr" --spool "$work/spool" | tee "$work/doctor.txt"
grep -q '^OK    model ' "$work/doctor.txt"
# The aarch64 package runs LiteRT int8 from its own files: the library it
# carries and the .tflite beside the manifest.
contents=$(tar -tzf "$package")
grep -q '/lib/libLiteRt\.so$' <<<"$contents"
grep -q '/models/efficientnet-lite0/encoder-int8\.tflite$' <<<"$contents"
grep -Eq '^OK +backend +litert int8 ' "$work/doctor.txt"
unit="$work/root/etc/systemd/system/latentcam-edge.service"
sed -i "s|/usr/bin/latentcam-edge|$work/root/usr/bin/latentcam-edge|" "$unit"
verify=$(systemd-analyze verify "$unit" 2>&1) || { echo "$verify"; exit 1; }
[ -z "$verify" ] || { echo "systemd-analyze verify: $verify"; exit 1; }
echo "systemd-analyze verify: clean"
# The Debian packages of both device builds, repacked from their tarballs
# (the armv7 one packed here: seconds, no build), completions and manual
# page written by the x86 edge of the test build.
for t in $A $V; do
    tarball=$package
    [ "$t" = $A ] || tarball=$(bash scripts/package.sh "$t" --no-build --profile "$profile" | tail -1)
    deb=$(DEB_COMPRESS=none bash scripts/deb.sh edge "$tarball" --describe "$out/debug/latentcam-edge")
    bash scripts/deb.sh check "$deb"
done
bash scripts/deploy.sh --dry-run --package "$package" pi@raspberrypi.local | tee "$work/deploy.txt"
grep -q "^+ scp $package pi@raspberrypi.local:" "$work/deploy.txt"
grep -q "install.sh" "$work/deploy.txt"
