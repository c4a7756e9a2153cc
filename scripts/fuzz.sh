#!/usr/bin/env bash
# Runs every fuzz target of wire/fuzz for a bounded time each.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (0 skips)
set -euo pipefail
cd "$(dirname "$0")/../wire/fuzz"
seconds="${1:-60}"
if [ "$seconds" = 0 ]; then echo "fuzz: skipped"; exit 0; fi
for target in stream_decoder codecs; do
    printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
    mkdir -p "corpus/$target"
    # Work on a copy so CI runs don't grow the committed seed corpus.
    work="$(mktemp -d)"
    log="$(mktemp)"
    cp -r "corpus/$target/." "$work/"
    status=0
    cargo +nightly fuzz run "$target" "$work" -- \
        -max_total_time="$seconds" -max_len=20000 -print_final_stats=1 >"$log" 2>&1 || status=$?
    if [ "$status" != 0 ]; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target failed (exit $status); crash input in wire/fuzz/artifacts/$target" >&2
        exit "$status"
    fi
    grep -E 'Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb' "$log" || tail -n 5 "$log"
    rm -rf "$work" "$log"
done
