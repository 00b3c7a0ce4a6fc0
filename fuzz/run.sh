#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and fails on the first crash.
#   fuzz/run.sh [seconds-per-target] [target…]     (default 30 s, every target)
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). New corpus entries go
# to a scratch copy; only the checked-in seeds live in fuzz/corpus. Crashes land in
# fuzz/artifacts/<target>/ (reproduce: cargo +nightly fuzz run <target> <file>).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(key_parse wire_decode keyset_apply plugin_config filter_request harness_header_map filter_wasm)
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Build only the targets asked for (cargo-fuzz builds one target, or all, per invocation).
for t in "${targets[@]}"; do
    cargo +nightly fuzz build -O "$t"
done
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
printf '%-20s %12s %8s %10s\n' target executions seconds exec/s
status=0
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "artifacts/$t"
    cp corpus/"$t"/* "$scratch/$t/" 2>/dev/null || true
    dict=()
    [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
    # harness_header_map and filter_wasm keep wasmtime instances across inputs on purpose; LeakSanitizer
    # would rescan their large mappings after every new input (6 exec/s instead of hundreds).
    case "$t" in harness_header_map | filter_wasm) dict+=("-detect_leaks=0") ;; esac
    # filter_wasm's first input compiles the real filter with a sanitized Cranelift (~15 s here).
    [ "$t" = filter_wasm ] && dict+=("-timeout=120")
    log="$scratch/$t.log"
    if cargo +nightly fuzz run -O "$t" "$scratch/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" "${dict[@]}" >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
    took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || echo "$secs")
    rate=$(( runs / (took > 0 ? took : 1) ))
    printf '%-20s %12s %8s %10s %s\n' "$t" "$runs" "$took" "$rate" "$result"
    if [ "$result" = CRASH ]; then
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -20 || true
    fi
done
exit $status
