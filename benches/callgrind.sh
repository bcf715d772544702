#!/bin/sh
# P1 / P1′ instruction table: builds the hot_path bench and runs each of its
# variants under callgrind, counting only the N measured requests
# (`callgrind_requests`), and prints instructions per request with the ratio
# to each variant's anchor.
#
#   benches/callgrind.sh            # N = 100000
#   N=20000 benches/callgrind.sh    # quicker
#
# Needs valgrind. Uses $CARGO_TARGET_DIR (default ./target).
set -eu
cd "$(dirname "$0")/.."
N=${N:-100000}
target=${CARGO_TARGET_DIR:-target}
cargo bench --bench hot_path --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*hot_path[^"]*\)".*/\1/p' | tail -n 1 > "$target/hot_path.bin"
bin=$(cat "$target/hot_path.bin")
[ -x "$bin" ] || { echo "no hot_path bench binary" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

count() {
    HOT_PATH_CALLGRIND=$N HOT_PATH_VARIANT=$1 valgrind --tool=callgrind \
        --toggle-collect='*callgrind_requests*' --callgrind-out-file="$out/cg.out" \
        "$bin" >/dev/null 2>&1
    total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$out/cg.out" | tail -n 1)
    echo $((total / N))
}

row() { # variant anchor-variant label
    v=$(count "$1")
    eval "ir_$(echo "$1" | tr '/' '_')=$v"
    if [ -n "$2" ]; then
        a=$(eval echo "\$ir_$(echo "$2" | tr '/' '_')")
        ratio=$(awk -v v="$v" -v a="$a" 'BEGIN { printf "%.2f×", v / a }')
        printf '| %s | %s | %s (%s) |\n' "$3" "$v" "$ratio" "$2"
    else
        printf '| %s | %s | anchor |\n' "$3" "$v"
    fi
}

echo "instructions per request, callgrind, N = $N"
echo
echo "| variant | instructions | ratio to anchor |"
echo "|---|---|---|"
row inner/0 "" "inner service alone"
row static/0 "" "SetRequestHeader, static, 0 headers"
row static/8 "" "SetRequestHeader, static, 8 headers"
row shared_header/0 static/0 "SetRequestHeader, run-time (ref-counted) value, 0 headers"
row token_no_replay/0 static/0 "TokenService, replay off, 0 headers (P1 ≤ 1.15)"
row token_no_replay/8 static/8 "TokenService, replay off, 8 headers (P1 ≤ 1.15)"
row static_retry/0 "" "SetRequestHeader under tower Retry, 0 headers"
row static_retry/8 "" "SetRequestHeader under tower Retry, 8 headers"
row token/0 static_retry/0 "TokenService, defaults, 0 headers (P1 ≤ 1.10)"
row token/8 static_retry/8 "TokenService, defaults, 8 headers (P1 ≤ 1.10)"
row clone/static "" "clone + drop: SetRequestHeader"
row clone/token clone/static "clone + drop: TokenService (P1′ ≤ 2)"
row oneshot/static "" "svc.clone().oneshot(req): SetRequestHeader"
row oneshot/static_retry "" "svc.clone().oneshot(req): SetRequestHeader under Retry"
row oneshot/token_no_replay oneshot/static "svc.clone().oneshot(req): TokenService, replay off"
row oneshot/token oneshot/static_retry "svc.clone().oneshot(req): TokenService, defaults"
