#!/usr/bin/env bash
# What each polling mode costs: the switch's CPU (utime+stime of its process, from
# /proc/PID/stat) idle and under a fixed UDP rate, and the round-trip time of pings through an
# idle switch (p50/p99), adaptive polling vs --busy-poll, in one run, rounds interleaved.
#
# Usage: scripts/poll-cost.sh [--rounds N] [--seconds S] [--pps P] [--pings K]
# Needs root and a release build (cargo build --release -p podswitch-control -p podswitch-cni
# -p podswitch-lab). Builds a 2-pod lab (examples/lab-2pods, switch on core 1) per case, and
# takes /run/podswitch-lab-tests.lock so it never runs beside a lab test. Traffic stays in the
# lab's namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
B=target/release/podswitch
ROUNDS=3 SECONDS_PER=10 PPS=20000 PINGS=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER=$2; shift 2 ;;
    --pps) PPS=$2; shift 2 ;;
    --pings) PINGS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "poll-cost.sh needs root" >&2; exit 1; }
[ -x "$B" ] || { echo "build first: cargo build --release -p podswitch-control -p podswitch-cni -p podswitch-lab" >&2; exit 1; }
exec 9>/run/podswitch-lab-tests.lock
flock 9
trap '$B lab down >/dev/null 2>&1 || true' EXIT

TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU seconds per second of process $1 over $2 seconds.
cpu_share() {
  local a b
  a=$(cpu_ticks "$1"); sleep "$2"; b=$(cpu_ticks "$1")
  awk -v d=$((b - a)) -v t="$TICK" -v s="$2" 'BEGIN { printf "%.3f", d / t / s }'
}
# p50 and p99 (microseconds) of the times ping printed.
rtt_percentiles() {
  grep -o 'time=[0-9.]*' | cut -d= -f2 | sort -n | awk '{ v[NR] = $1 * 1000 } END {
    p50 = v[int(NR * 0.50) > 0 ? int(NR * 0.50) : 1]; p99 = v[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1];
    printf "%.0f %.0f %d", p50, p99, NR }'
}

printf '%-6s %-9s %10s %10s %10s %10s %10s %14s\n' round mode idle_cpu load_cpu rtt_p50_us rtt_p99_us pings wakeups_data
for round in $(seq "$ROUNDS"); do
  for mode in adaptive busy_poll; do
    flag=(); [ "$mode" = busy_poll ] && flag=(--busy-poll)
    $B lab down >/dev/null 2>&1 || true
    $B lab up --manifests examples/lab-2pods --cores 1 "${flag[@]}" >/dev/null
    st=$($B lab status --json)
    pid=$(jq -r '.switch.pid' <<<"$st")
    b_ip=$(jq -r '.pods[] | select(.pod == "x/b") | .ip' <<<"$st" | head -1)
    [ -n "$b_ip" ] && [ "$b_ip" != null ] || { echo "no IP for x/b in lab status" >&2; exit 1; }
    $B lab exec x/a -- ping -c 3 -i 0.2 "$b_ip" >/dev/null   # ARP and first packets out of the way
    sleep 1
    idle=$(cpu_share "$pid" "$SECONDS_PER")
    # One ping every 2 ms: with adaptive polling the worker is asleep when each arrives.
    rtt=$($B lab exec x/a -- ping -c "$PINGS" -i 0.002 "$b_ip" | rtt_percentiles)
    # A fixed UDP rate, 64-byte payloads, a -> b.
    $B lab exec x/b -- iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
    srv=$!
    sleep 0.5
    bps=$((PPS * 64 * 8))
    $B lab exec x/a -- iperf3 -u -c "$b_ip" -p 5201 -b "$bps" -l 64 -t $((SECONDS_PER + 2)) >/dev/null 2>&1 &
    cli=$!
    sleep 1
    load=$(cpu_share "$pid" "$SECONDS_PER")
    wait "$cli" || true
    wait "$srv" || true
    wake=$($B show workers --json | jq '[.workers[].wakeups.data] | add')
    read -r p50 p99 n <<<"$rtt"
    printf '%-6s %-9s %10s %10s %10s %10s %10s %14s\n' "$round" "$mode" "$idle" "$load" "$p50" "$p99" "$n" "$wake"
    $B lab down >/dev/null
  done
done
