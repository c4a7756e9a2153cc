#!/usr/bin/env bash
# Runs every fuzz target of wire/fuzz for a bounded time each.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (0 skips)
#        scripts/fuzz.sh build                  (builds the targets only)
#
# The targets are built once, then fuzzed side by side (libFuzzer runs one
# process per target on one core each), so each gets its full SECONDS while
# the step takes SECONDS, not SECONDS per target.
set -euo pipefail
cd "$(dirname "$0")/../wire/fuzz"
source ../../scripts/steps.sh
seconds="${1:-60}"
if [ "$seconds" = 0 ]; then echo "fuzz: skipped"; exit 0; fi
targets=(stream_decoder codecs handshake)

step "fuzz: build ${targets[*]} (nightly, cargo-fuzz, address sanitizer)"
cargo +nightly fuzz build
[ "$seconds" = build ] && exit 0

step "fuzz: ${targets[*]} for ${seconds}s each, side by side"
work="$(mktemp -d)"
trap 'steps_exit $?; rm -rf "$work"' EXIT
declare -A pids
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "$work/$target"
    # Work on a copy so CI runs don't grow the committed seed corpus.
    cp -r "corpus/$target/." "$work/$target/"
    cargo +nightly fuzz run "$target" "$work/$target" -- \
        -max_total_time="$seconds" -max_len=20000 -print_final_stats=1 >"$work/$target.log" 2>&1 &
    pids[$target]=$!
done
failed=0
for target in "${targets[@]}"; do
    status=0
    wait "${pids[$target]}" || status=$?
    printf '\n==> fuzz %s (%ss)\n' "$target" "$seconds"
    if [ "$status" != 0 ]; then
        tail -n 60 "$work/$target.log" >&2
        echo "fuzz: $target failed (exit $status); crash input in wire/fuzz/artifacts/$target" >&2
        failed=$status
        continue
    fi
    grep -E 'Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb' "$work/$target.log" ||
        tail -n 5 "$work/$target.log"
done
exit "$failed"
