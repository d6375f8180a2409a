#!/bin/sh
# Run a fuzz target for a fixed time (not part of CI): the pcap/pcapng
# reader by default, seeded with the fixtures. Prints libFuzzer's closing
# statistics (executions, coverage); a crash leaves its input under
# fuzz/artifacts/ and makes this script fail.
#
#   fuzz/run.sh [TARGET] [SECONDS]      e.g. fuzz/run.sh pcap_reader 300
#
# Needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
set -eu
target=${1:-pcap_reader}
secs=${2:-300}
here=$(cd "$(dirname "$0")" && pwd)
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
if [ "$target" = pcap_reader ]; then
    cp "$here"/../fixtures/*.pcap "$here"/../fixtures/*.pcapng "$corpus"/
fi
cd "$here"
cargo +nightly fuzz run "$target" "$corpus" -- \
    -max_total_time="$secs" -rss_limit_mb=512 -print_final_stats=1 2>&1 |
    tee "$corpus/log" | grep -E '^(#[0-9]+[[:space:]]+DONE|stat::|==[0-9]+==|SUMMARY|Done)' || true
grep -q 'Done [0-9]* runs' "$corpus/log" || { tail -40 "$corpus/log"; exit 1; }
