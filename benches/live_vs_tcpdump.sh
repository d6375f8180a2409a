#!/usr/bin/env bash
# Live capture, side by side: `portwatch watch` and `tcpdump` in turn on one
# end of a veth pair while `tcpreplay --topspeed` sends a whole-frame
# capture into the other end. Prints, per run, the packets sent and the
# rate, the control packets the tool saw (of how many the file holds), and
# the kernel's drop counter. Not a timed test: nothing here fails on speed.
#
#   sudo benches/live_vs_tcpdump.sh                 # 1M packets, 2 rounds
#   PACKETS=3000000 ROUNDS=3 sudo benches/live_vs_tcpdump.sh
#   SHAPE=vxlan sudo benches/live_vs_tcpdump.sh     # every frame in VXLAN
#
# SHAPE=vxlan sends the same frames as a mirror session delivers them (UDP
# 4789). portwatch's kernel filter then selects the VXLAN datagrams whose
# inner frame may hold a control segment; tcpdump gets the same clause, and
# a third tool, tcpdump-whole, passes every datagram of the tunnel (`udp dst
# port 4789`): what a capture filtering in user space would have to take
# from the kernel. Its drops against tcpdump's are the cost of not
# selecting in the kernel. "control seen" for tcpdump counts the packets its
# filter passed, which for VXLAN includes inner IPv6 and VLAN-tagged frames
# the kernel clause leaves to user space.
#
# Needs root, `ip` (iproute2), `tcpreplay` and `tcpdump`. Everything runs in
# a network namespace created here (both ends of the veth pair are inside
# it: no bridge, no route out) and removed on exit with the capture file.
# Both tools use the same filter (`portwatch watch`'s control filter), the
# same snaplen (128) and kernel buffer (64 MiB), and batch delivery.
set -euo pipefail

cd "$(dirname "$0")/.."
PACKETS=${PACKETS:-1000000}
ROUNDS=${ROUNDS:-2}
SHAPE=${SHAPE:-plain}
case $SHAPE in
plain) TOOLS="portwatch tcpdump" ;;
vxlan) TOOLS="portwatch tcpdump tcpdump-whole" ;;
*)
    echo "error: SHAPE is plain or vxlan" >&2
    exit 2
    ;;
esac
TARGET=${CARGO_TARGET_DIR:-target}

if [ "$(id -u)" != 0 ]; then
    echo "error: needs root (network namespace and veth pair)" >&2
    exit 2
fi
for tool in ip tcpreplay tcpdump; do
    if ! command -v $tool >/dev/null; then
        echo "error: $tool is not installed" >&2
        exit 2
    fi
done

cargo build --release --bin portwatch --example make_bench_capture
PORTWATCH=$(realpath "$TARGET/release/portwatch")
GENERATE=$TARGET/release/examples/make_bench_capture

NS=pwlive-$$
SEND=pws$$
CAPTURE=pwc$$
DIR=$(mktemp -d "${TMPDIR:-/tmp}/portwatch-live.XXXXXX")
CAPTURER=
cleanup() {
    if [ -n "$CAPTURER" ]; then kill "$CAPTURER" 2>/dev/null || true; fi
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

ip netns add "$NS"
# No IPv6 on the links: its multicast listener reports would pass the filter.
ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n "$NS" link add "$CAPTURE" type veth peer name "$SEND"
for dev in "$CAPTURE" "$SEND" lo; do
    # The capture has some jumbo frames (9014 bytes, 9018 with a VLAN tag).
    ip -n "$NS" link set "$dev" mtu 9216
    ip -n "$NS" link set "$dev" up
done
# Frames are addressed to MACs the veth does not own.
ip -n "$NS" link set "$CAPTURE" promisc on

FILE=$DIR/live.pcap
"$GENERATE" "$FILE" "$PACKETS" --snaplen 262144
FILTER=$("$GENERATE" --print-filter)
# Control packets of the frames, counted before any wrapping.
IN_FILE=$(tcpdump -n -r "$FILE" "$FILTER" 2>/dev/null | wc -l)
if [ "$SHAPE" = vxlan ]; then
    "$GENERATE" "$FILE" "$PACKETS" --snaplen 262144 --vxlan
    FILTER=$("$GENERATE" --print-filter --vxlan)
fi
echo "capture: $PACKETS packets ($SHAPE), $(du -m "$FILE" | cut -f1) MB, $IN_FILE control packets"

# start TOOL: starts the capture in the namespace; waits until it listens.
start() {
    local tool=$1 ready
    case $tool in
    portwatch)
        ip netns exec "$NS" "$PORTWATCH" watch -i "$CAPTURE" --site multi-node --format json \
            >/dev/null 2>"$DIR/$tool.err" &
        ready=capturing
        ;;
    tcpdump | tcpdump-whole)
        local filter=$FILTER
        if [ "$tool" = tcpdump-whole ]; then filter="udp dst port 4789"; fi
        ip netns exec "$NS" tcpdump -n -i "$CAPTURE" -s 128 -B 65536 -w /dev/null "$filter" \
            2>"$DIR/$tool.err" &
        ready="listening on"
        ;;
    esac
    CAPTURER=$!
    for _ in $(seq 100); do
        if grep -q "$ready" "$DIR/$tool.err"; then return; fi
        sleep 0.1
    done
    echo "error: $tool did not start:" >&2
    cat "$DIR/$tool.err" >&2
    exit 2
}

# stop: interrupts the capture and waits for its report.
stop() {
    sleep 1 # let the last batch through
    kill -INT "$CAPTURER"
    wait "$CAPTURER" || true # portwatch exits 1 on findings
    CAPTURER=
}

# seen TOOL: "CONTROL_PACKETS_SEEN KERNEL_DROPS" from the tool's report.
seen() {
    case $1 in
    portwatch)
        awk '/"control_packets"/ { on = 1; next }
             on && /}/ { on = 0 }
             on { gsub(/[^0-9]/, "", $2); n += $2 }
             /dropped by kernel/ { for (i = 1; i <= NF; i++) if ($i == "dropped" && $(i + 2) == "kernel,") d = $(i - 1) }
             END { print n + 0, d + 0 }' "$DIR/portwatch.err"
        ;;
    tcpdump | tcpdump-whole)
        awk '/packets captured/ { n = $1 } /dropped by kernel/ { d = $1 } END { print n + 0, d + 0 }' \
            "$DIR/$1.err"
        ;;
    esac
}

printf "%-6s %-13s %10s %12s %14s %12s\n" round tool sent "sent/s" "control seen" "kernel drops"
for round in $(seq "$ROUNDS"); do
    for tool in $TOOLS; do
        start $tool
        ip netns exec "$NS" tcpreplay --topspeed -i "$SEND" "$FILE" >"$DIR/tcpreplay.out" 2>&1
        stop
        sent=$(awk '/Actual:/ { print $2 }' "$DIR/tcpreplay.out")
        rate=$(awk '/Rated:/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^pps/) print $i }' "$DIR/tcpreplay.out")
        failed=$(awk '/Failed packets:/ { print $3 }' "$DIR/tcpreplay.out")
        read -r control drops < <(seen $tool)
        printf "%-6s %-13s %10s %12s %7s / %-6s %12s%s\n" "$round" $tool "$sent" "$rate" "$control" "$IN_FILE" "$drops" \
            "$([ "${failed:-0}" != 0 ] && echo "  ($failed not sent)")"
    done
done
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(tcpreplay --version 2>&1 | head -n 1); $(tcpdump --version 2>&1 | head -n 1)"
