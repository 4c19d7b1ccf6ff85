#!/usr/bin/env bash
# Runs every fuzz target of the core for SECONDS each (default 60) and fails on the first
# crash (a panic, an overflow: debug assertions are on) or timeout. Needs cargo-fuzz; the
# nightly-only flags it passes are allowed on a stable toolchain through RUSTC_BOOTSTRAP=1.
# No sanitizer by default: the core forbids `unsafe`, so AddressSanitizer finds nothing
# Rust's own checks miss, and it makes the whole-server target ~50x slower.
# FUZZ_SANITIZER=address turns it on; FUZZ_TARGETS="a b" runs a subset.
# Prints, per target, the executions and the coverage (libFuzzer's `cov:` figure) reached.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets="${FUZZ_TARGETS:-stun_decode channel_data proxy_v1_v2 stream_framer whole_server http_api trace_mask}"
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null 2>&1 || {
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
}

# The seed corpora are made from committed sources (RFC vectors, uclient captures).
if command -v python3 >/dev/null 2>&1; then
    python3 seeds/make-seeds.py
else
    echo "python3 missing: fuzzing without seed corpora" >&2
fi

start=$(date +%s)
cargo fuzz build -O -a -s "$sanitizer"
built=$(date +%s)
echo "build: $((built - start)) s"

logs="$(mktemp -d)"
summary=()
for t in $targets; do
    mkdir -p "corpus/$t"
    echo "=== $t: ${seconds} s"
    dict=stun.dict
    [ "$t" = http_api ] && dict=http.dict
    if ! cargo fuzz run -O -a -s "$sanitizer" "$t" -- \
        -max_total_time="$seconds" -dict="$dict" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -close_fd_mask=3 >"$logs/$t.log" 2>&1; then
        tail -n 60 "$logs/$t.log"
        echo "FAIL: $t crashed; the input is in core/fuzz/artifacts/$t/" >&2
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$logs/$t.log" | tail -n 1 | cut -d' ' -f2)
    corpus=$(find "corpus/$t" -type f | wc -l)
    summary+=("$(printf '%-14s %12s execs  cov %6s  ft %7s  corpus %6s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corpus")")
done
echo
echo "fuzzing, ${seconds} s per target (sanitizer: $sanitizer), build $((built - start)) s, total $(($(date +%s) - start)) s:"
printf '%s\n' "${summary[@]}"
rm -rf "$logs"
