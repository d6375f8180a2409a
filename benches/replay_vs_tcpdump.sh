#!/usr/bin/env bash
# Replay throughput: `portwatch replay` against `tcpdump -r` with the same
# control-packet filter, on generated captures of the multi-node site, one
# shape after another:
#
#   header      pcap, snaplen 128 (a header-only sensor)
#   header-ng   the same as pcapng
#   full        pcap, whole frames (ACKs, MTU-sized data, some jumbo)
#   full-ng     the same as pcapng
#   flood       whole frames plus a scan: 9-10% control packets from 65,536
#               addresses, so the flow table, flow rows and findings all
#               reach their caps
#   flood-ng    the same as pcapng
#   merge4      four whole-frame files of PACKETS/4 (two pcap, two pcapng)
#               merged by portwatch; tcpdump reads them one after the other
#   vxlan       the header shape as a cloud mirror session delivers it: each
#               frame in VXLAN (UDP 4789), snaplen 178 (the same 128 bytes
#               of the inner frame); tcpdump's filter selects the VXLAN
#               datagrams whose inner frame may hold a control segment, the
#               clause portwatch's live filter uses
#   foreign     other systems' traffic, as a sensor on a shared segment sees
#               it: 25 client and 25 server hosts outside the site (every SYN
#               an unknown host's), 5,000 connections open, 8% control
#               packets; pcap, snaplen 128
#   foreign-full  the same, whole frames (about 680 bytes on average)
#   foreign-ng  the foreign shape as pcapng (snaplen 128)
#   mixed       the header shape's site traffic as one packet in ten, inside
#               foreign traffic; pcap, snaplen 128
#
# For each: the `dd bs=1M` floor for reading the file(s), then ROUNDS
# alternating rounds of portwatch and tcpdump; it prints the medians in
# packets/s, the median of the per-round ratios, and peak RSS. Before each
# portwatch round it measures how long a cache line takes between the two
# cores and back (examples/core_to_core.rs): `replay` reads on one core and
# works on the other, and on a virtual machine whose CPUs the host places
# far apart, a round takes twice as long (benches/README.md). Then peak RSS
# of portwatch on the flood shape at 1x, 2x and 4x PACKETS (header-only, to
# spare disk): it must not grow with capture length.
#
#   benches/replay_vs_tcpdump.sh                  # 5M packets, 5 rounds
#   PACKETS=1000000 ROUNDS=3 SHAPES="full merge4" MEMORY=0 benches/replay_vs_tcpdump.sh
#
# Captures go to BENCH_DIR (default: a new directory under ${TMPDIR:-/tmp}),
# one shape at a time (a 5M whole-frame file is about 4.3 GB), and are
# deleted after their shape unless KEEP=1. Exit status 1 from portwatch
# (findings) is expected. Figures of the last run: benches/README.md.
set -euo pipefail
trap 'exit 130' INT TERM # so that the EXIT trap below removes the captures

cd "$(dirname "$0")/.."
PACKETS=${PACKETS:-5000000}
ROUNDS=${ROUNDS:-5}
SHAPES=${SHAPES:-header header-ng full full-ng flood flood-ng merge4 vxlan foreign foreign-full foreign-ng mixed}
MEMORY=${MEMORY:-1}
TARGET=${CARGO_TARGET_DIR:-target}
FULL=262144

# The tools first (.ci/deps installs them too), so that nothing is
# installed once timing has begun.
if ! command -v tcpdump >/dev/null; then
    echo "error: tcpdump is not installed" >&2
    exit 2
fi
if ! /usr/bin/time -f %M true >/dev/null 2>&1; then
    echo "GNU time not found; installing it (apt-get install -y time)" >&2
    apt-get install -y time >/dev/null
fi
if ! command -v vmtouch >/dev/null; then
    echo "vmtouch not found; installing it (apt-get install -y vmtouch)" >&2
    apt-get install -y vmtouch >/dev/null
fi

cargo build --release --bin portwatch --example make_bench_capture --example core_to_core
PORTWATCH=$TARGET/release/portwatch
GENERATE=$TARGET/release/examples/make_bench_capture
CORE_TO_CORE=$TARGET/release/examples/core_to_core

DIR=${BENCH_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/portwatch-bench.XXXXXX")}
mkdir -p "$DIR"
# unlock: lets go of the captures locked in the page cache (see below).
unlock() {
    if [ -f "$DIR/vmtouch.pid" ]; then
        kill "$(cat "$DIR/vmtouch.pid")" 2>/dev/null || true
        rm -f "$DIR/vmtouch.pid"
    fi
}
if [ "${KEEP:-0}" = 1 ]; then
    echo "keeping captures in $DIR"
    trap unlock EXIT
else
    trap 'unlock; rm -f "$DIR"/bench-* "$DIR"/{runs,sizes,rss,stderr}; rmdir "$DIR" 2>/dev/null || true' EXIT
fi
FILTER=$("$GENERATE" --print-filter)
VXLAN_FILTER=$("$GENERATE" --print-filter --vxlan)
RUNS=$DIR/runs
: >"$RUNS"

# generate SHAPE: writes the shape's file(s); prints their paths.
generate() {
    local shape=$1 n=$PACKETS
    case $shape in
    header) "$GENERATE" "$DIR/bench-$shape.pcap" "$n" && echo "$DIR/bench-$shape.pcap" ;;
    header-ng) "$GENERATE" "$DIR/bench-$shape.pcapng" "$n" --pcapng && echo "$DIR/bench-$shape.pcapng" ;;
    full) "$GENERATE" "$DIR/bench-$shape.pcap" "$n" --snaplen $FULL && echo "$DIR/bench-$shape.pcap" ;;
    full-ng) "$GENERATE" "$DIR/bench-$shape.pcapng" "$n" --snaplen $FULL --pcapng && echo "$DIR/bench-$shape.pcapng" ;;
    flood) "$GENERATE" "$DIR/bench-$shape.pcap" "$n" --snaplen $FULL --flood && echo "$DIR/bench-$shape.pcap" ;;
    flood-ng) "$GENERATE" "$DIR/bench-$shape.pcapng" "$n" --snaplen $FULL --flood --pcapng && echo "$DIR/bench-$shape.pcapng" ;;
    vxlan) "$GENERATE" "$DIR/bench-$shape.pcap" "$n" --snaplen 178 --vxlan && echo "$DIR/bench-$shape.pcap" ;;
    foreign) "$GENERATE" "$DIR/bench-$shape.pcap" "$n" --foreign && echo "$DIR/bench-$shape.pcap" ;;
    foreign-full) "$GENERATE" "$DIR/bench-$shape.pcap" "$n" --foreign --snaplen $FULL && echo "$DIR/bench-$shape.pcap" ;;
    foreign-ng) "$GENERATE" "$DIR/bench-$shape.pcapng" "$n" --foreign --pcapng && echo "$DIR/bench-$shape.pcapng" ;;
    mixed) "$GENERATE" "$DIR/bench-$shape.pcap" "$n" --mixed && echo "$DIR/bench-$shape.pcap" ;;
    merge4)
        for seed in 1 2 3 4; do
            local ext=pcap opt=()
            if [ $seed -gt 2 ]; then ext=pcapng opt=(--pcapng); fi
            "$GENERATE" "$DIR/bench-$shape-$seed.$ext" $((n / 4)) $seed --snaplen $FULL "${opt[@]}"
            echo "$DIR/bench-$shape-$seed.$ext"
        done
        ;;
    *)
        echo "error: unknown shape $shape" >&2
        exit 2
        ;;
    esac
}

# run SHAPE TOOL CMD...: runs CMD once; appends "SHAPE TOOL WALL RSS_KB CPU"
# (CPU: user + system seconds of CMD and its children).
run() {
    local shape=$1 tool=$2 start end rc=0
    shift 2
    start=$(date +%s%N)
    /usr/bin/time -f "%M %U %S" -o "$DIR/rss" "$@" >/dev/null 2>"$DIR/stderr" || rc=$?
    end=$(date +%s%N)
    # portwatch: 0 clean, 1 findings; tcpdump and dd: 0.
    if [ "$rc" -gt 1 ]; then
        echo "error: $shape $tool exited with $rc:" >&2
        cat "$DIR/stderr" >&2
        exit 2
    fi
    echo "$shape $tool $(((end - start) / 1000000)) $(tail -n 1 "$DIR/rss")" |
        awk '{ printf "%s %s %.3f %s %.2f\n", $1, $2, $3 / 1000, $4, $5 + $6 }' >>"$RUNS"
}

# tcpdump and dd read several files one after the other (they cannot merge).
export SHAPE_FILTER
TCPDUMP_EACH='for f; do tcpdump -n -r "$f" -w /dev/null "$SHAPE_FILTER" || exit $?; done'
DD_EACH='for f; do dd if="$f" of=/dev/null bs=1M status=none || exit $?; done'

for shape in $SHAPES; do
    echo "== $shape: generating $PACKETS packets"
    SHAPE_FILTER=$FILTER
    if [ "$shape" = vxlan ]; then SHAPE_FILTER=$VXLAN_FILTER; fi
    mapfile -t files < <(generate "$shape")
    # Written back before timing (otherwise the kernel's flusher threads
    # write gigabytes to disk during the first rounds and take CPU from
    # both), then dropped from the page cache and read back in, so it is
    # cached as a capture read from disk is, not as the generator wrote it.
    sync
    for f in "${files[@]}"; do dd if="$f" iflag=nocache count=0 status=none; done
    cat "${files[@]}" >/dev/null
    # Locked in the page cache for the rounds: proactive reclaim (DAMON's
    # pageout scheme on this project's machines) would otherwise evict parts
    # of a file between rounds and time disk reads instead of the tools.
    vmtouch -q -l -d -m 64G -P "$DIR/vmtouch.pid" "${files[@]}"
    sleep 1
    echo "$shape bytes $(cat "${files[@]}" | wc -c)" >>"$DIR/sizes"
    # One untimed run of each first: page tables, allocator and CPU caches
    # warmed for both tools alike.
    "$PORTWATCH" replay --site multi-node "${files[@]}" --format json >/dev/null 2>&1 || true
    bash -c "$TCPDUMP_EACH" _ "${files[@]}" >/dev/null 2>&1
    for round in $(seq "$ROUNDS"); do
        run "$shape" dd bash -c "$DD_EACH" _ "${files[@]}"
        echo "$shape c2c $("$CORE_TO_CORE") 0 0" >>"$RUNS"
        run "$shape" portwatch "$PORTWATCH" replay --site multi-node "${files[@]}" --format json
        if [ ${#files[@]} = 1 ]; then
            run "$shape" tcpdump tcpdump -n -r "${files[0]}" -w /dev/null "$SHAPE_FILTER"
        else
            run "$shape" tcpdump bash -c "$TCPDUMP_EACH" _ "${files[@]}"
        fi
        tail -n 4 "$RUNS" | awk -v r="$round" -v n="$PACKETS" '
            $2 == "c2c" { printf "  round %d  core to core and back: %d ns\n", r, $3; next }
            { printf "  round %d  %-9s %6.3f s  %10.0f packets/s  %7d KB peak RSS  %6.2f s CPU\n", r, $2, $3, n / $3, $4, $5 }'
    done
    unlock
    if [ "${KEEP:-0}" != 1 ]; then rm -f "${files[@]}"; fi
done

if [ "$MEMORY" = 1 ]; then
    for mult in 1 2 4; do
        n=$((mult * PACKETS))
        f=$DIR/bench-memory-$mult.pcap
        echo "== memory: flood shape, $n packets (snaplen 128)"
        "$GENERATE" "$f" "$n" --flood
        sync
        dd if="$f" iflag=nocache count=0 status=none
        cat "$f" >/dev/null
        run "memory-${mult}x" portwatch "$PORTWATCH" replay --site multi-node "$f" --format json
        tail -n 1 "$RUNS" | awk '{ printf "  %s  %.3f s  %d KB peak RSS  %.2f s CPU\n", $1, $3, $4, $5 }'
        rm -f "$f"
    done
fi

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tcpdump: $(tcpdump --version 2>&1 | head -n 1); $(tcpdump --version 2>&1 | sed -n 2p)"
echo "$PACKETS packets a shape, $ROUNDS alternating rounds (dd, portwatch, tcpdump); medians"
echo
awk -v n="$PACKETS" '
    function median(a, k,    i, j, t) {
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    FILENAME ~ /sizes$/ { bytes[$1] = $3; next }
    $1 ~ /^memory-/ { mem[$1] = $4; next }
    {
        s = $1
        if (!(s in seen)) { seen[s] = 1; order[++shapes] = s }
        k = ++count[s, $2]
        t[s, $2, k] = $3
        c[s, $2, k] = $5
        if ($4 > rss[s, $2]) rss[s, $2] = $4
    }
    END {
        printf "%-12s %6s %8s %10s %10s %10s %7s %7s %7s %8s %7s %7s\n", "shape", "MB", "dd GB/s", "dd pkt/s", "portwatch", "tcpdump", "ratio", "cpu", "pw ns", "pw RSS", "td RSS", "c2c ns"
        for (i = 1; i <= shapes; i++) {
            s = order[i]; k = count[s, "portwatch"]
            for (r = 1; r <= k; r++) {
                dd[r] = t[s, "dd", r]; pw[r] = t[s, "portwatch", r]; td[r] = t[s, "tcpdump", r]; c2c[r] = t[s, "c2c", r]
                ratio[r] = td[r] / pw[r]
                cpu[r] = c[s, "tcpdump", r] / (c[s, "portwatch", r] > 0 ? c[s, "portwatch", r] : 0.01)
                pwcpu[r] = c[s, "portwatch", r]
            }
            mdd = median(dd, k); mpw = median(pw, k); mtd = median(td, k)
            printf "%-12s %6.0f %8.2f %10.0f %10.0f %10.0f %6.2fx %6.2fx %7.1f %5.1f MB %4.1f MB %7.0f\n", s, bytes[s] / 1e6, bytes[s] / mdd / 1e9, n / mdd, n / mpw, n / mtd, median(ratio, k), median(cpu, k), median(pwcpu, k) * 1e9 / n, rss[s, "portwatch"] / 1024, rss[s, "tcpdump"] / 1024, median(c2c, k)
        }
        printf "packets/s: medians of wall time; ratio: median of the per-round ratios tcpdump/portwatch of wall time,\n"
        printf "cpu: the same of CPU time (user + system); pw ns: portwatch CPU time per packet (median, ns);\n"
        printf "RSS: peak over the rounds (MB = 1024 KB);\n"
        printf "c2c: median over the rounds of a cache line from one core to the other and back (ns)\n"
        if ("memory-1x" in mem)
            printf "\nportwatch peak RSS on the flood shape: %.1f MB at %d packets, %.1f MB at %d, %.1f MB at %d\n", mem["memory-1x"] / 1024, n, mem["memory-2x"] / 1024, 2 * n, mem["memory-4x"] / 1024, 4 * n
    }' "$DIR/sizes" "$RUNS"
