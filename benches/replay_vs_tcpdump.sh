#!/usr/bin/env bash
# Replay throughput: `portwatch replay` against `tcpdump -r` with the same
# control-packet filter, on a generated capture of the multi-node site.
#
#   benches/replay_vs_tcpdump.sh            # 5M packets, 3 alternating rounds
#   PACKETS=1000000 ROUNDS=5 benches/replay_vs_tcpdump.sh
#
# The captures are written to a temporary directory (removed on exit; set
# KEEP=1 to keep it) by examples/make_bench_capture.rs. Both tools read
# them from the page cache: each file is read once before timing. Exit
# status 1 from portwatch (findings) is expected; the capture has some.
# Results and the figures of the last run are in benches/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."
PACKETS=${PACKETS:-5000000}
ROUNDS=${ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release --bin portwatch --example make_bench_capture
PORTWATCH=$TARGET/release/portwatch
GENERATE=$TARGET/release/examples/make_bench_capture

if ! command -v tcpdump >/dev/null; then
    echo "error: tcpdump is not installed" >&2
    exit 2
fi
if ! /usr/bin/time -f %M true >/dev/null 2>&1; then
    echo "GNU time not found; installing it (apt-get install -y time)" >&2
    apt-get install -y time >/dev/null
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/portwatch-bench.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "keeping $TMP"
else
    trap 'rm -rf "$TMP"' EXIT
fi

ONE=$TMP/bench-1x.pcap
TWO=$TMP/bench-2x.pcap
echo "generating $PACKETS and $((2 * PACKETS)) packets in $TMP"
"$GENERATE" "$ONE" "$PACKETS"
"$GENERATE" "$TWO" "$((2 * PACKETS))"
FILTER=$("$GENERATE" --print-filter)
cat "$ONE" "$TWO" >/dev/null # into the page cache

# run LABEL CMD...: runs CMD once; appends "LABEL SECONDS RSS_KB" to $TMP/runs.
run() {
    local label=$1 start end rc=0
    shift
    start=$(date +%s%N)
    /usr/bin/time -f %M -o "$TMP/rss" "$@" >/dev/null 2>"$TMP/stderr" || rc=$?
    end=$(date +%s%N)
    # portwatch: 0 clean, 1 findings; tcpdump: 0.
    if [ "$rc" -gt 1 ]; then
        echo "error: $label exited with $rc:" >&2
        cat "$TMP/stderr" >&2
        exit 2
    fi
    echo "$label $(((end - start) / 1000000)) $(tail -n 1 "$TMP/rss")" | awk \
        '{ printf "%s %.3f %s\n", $1, $2 / 1000, $3 }' >>"$TMP/runs"
}

: >"$TMP/runs"
for round in $(seq "$ROUNDS"); do
    run portwatch "$PORTWATCH" replay --site multi-node "$ONE" --format json
    run tcpdump tcpdump -n -r "$ONE" -w /dev/null "$FILTER"
    tail -n 2 "$TMP/runs" | awk -v r="$round" -v n="$PACKETS" \
        '{ printf "round %d  %-9s %6.3f s  %10.0f packets/s  %6d KB peak RSS\n", r, $1, $2, n / $2, $3 }'
done
run portwatch-2x "$PORTWATCH" replay --site multi-node "$TWO" --format json
# With a flow table that fills early, 1x and 2x both run at the cap.
run small-table-1x "$PORTWATCH" replay --site multi-node --max-flows 4096 "$ONE" --format json
run small-table-2x "$PORTWATCH" replay --site multi-node --max-flows 4096 "$TWO" --format json

echo
echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "capture: $PACKETS packets, $(du -m "$ONE" | cut -f1) MB (snaplen 128)"
awk -v n="$PACKETS" '
    function median(a, k,    i, j, t) {
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    $1 == "portwatch" { p++; pw[p] = $2; if ($3 > rss1) rss1 = $3 }
    $1 == "tcpdump" { t++; td[t] = $2; if ($3 > rsstd) rsstd = $3 }
    $1 == "portwatch-2x" { rss2 = $3; secs2 = $2 }
    $1 == "small-table-1x" { small1 = $3 }
    $1 == "small-table-2x" { small2 = $3 }
    END {
        for (i = 1; i <= p; i++) ratio[i] = td[i] / pw[i]
        printf "portwatch: median %10.0f packets/s  peak RSS %d KB\n", n / median(pw, p), rss1
        printf "tcpdump:   median %10.0f packets/s  peak RSS %d KB\n", n / median(td, t), rsstd
        printf "ratio portwatch/tcpdump (median of %d alternating rounds): %.2fx\n", p, median(ratio, p)
        printf "peak RSS of portwatch: %d KB on 1x, %d KB on 2x (%d packets, %.0f packets/s)\n", rss1, rss2, 2 * n, 2 * n / secs2
        printf "peak RSS with --max-flows 4096: %d KB on 1x, %d KB on 2x\n", small1, small2
    }' "$TMP/runs"
