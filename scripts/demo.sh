#!/usr/bin/env bash
# The podswitch demo: installs what is missing, builds, brings up a lab of 9 pods (namespaces
# x, y, z; pods a, b, c) on this machine, sends ping, TCP and UDP between pods through the
# switch, and prints what went through it. The lab stays up for you to explore; run
# `target/release/podswitch lab down` (or `scripts/demo.sh --down`) to remove it.
#
# Everything happens inside network namespaces the lab creates; the machine's own network is
# not touched. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh

BIN=target/release/podswitch
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ "${1:-}" = "--down" ]; then
  exec "$BIN" lab down
fi
if [ "$(id -u)" != 0 ]; then
  echo "demo.sh needs root (it creates network namespaces and loads XDP programs)" >&2
  exit 1
fi

step "installing what is missing, building (release)"
podswitch_install_rust
podswitch_install_debs "${PODSWITCH_DEBS[@]}"
cargo build --release --locked -p podswitch-control -p podswitch-lab -p podswitch-cni 2>&1 | tail -1

step "bringing up the lab (examples/lab-9pods)"
"$BIN" lab down >/dev/null
"$BIN" lab up --manifests examples/lab-9pods

ip_of() { "$BIN" lab status --json | python3 -c "import json,sys; print(next(p['ip'] for p in json.load(sys.stdin)['pods'] if p['pod']=='$1'))"; }

step "ping x/a -> z/c (routed by the switch: TTL 64 arrives as 63)"
"$BIN" lab exec x/a -- ping -c 3 -i 0.2 "$(ip_of z/c)"

step "ping the pods' gateway 169.254.1.1 (answered by the switch itself)"
"$BIN" lab exec y/b -- ping -c 1 169.254.1.1

step "TCP/80 and UDP/81 between every pair of pods (real sockets; each server answers with its name)"
targets=()
for ns in x y z; do for p in a b c; do targets+=("pod/$ns/$p:80/tcp" "pod/$ns/$p:81/udp"); done; done
"$BIN" lab probe --to "${targets[@]}"

step "one probe in detail: what the server saw"
"$BIN" lab probe --from x/a --to pod/y/c:80/tcp --json

step "the node's own stack reaches its pods (kubelet's path)"
"$BIN" lab probe --from node --to pod/x/b:80/tcp pod/z/a:81/udp

step "a pod that forges another pod's source address reaches nobody"
"$BIN" lab exec x/a -- ip addr add "$(ip_of x/b)/32" dev eth0
"$BIN" lab exec x/a -- ping -c 2 -W 1 -I "$(ip_of x/b)" "$(ip_of z/c)" || echo "(no answer, as it should be)"
"$BIN" lab exec x/a -- ip addr del "$(ip_of x/b)/32" dev eth0

step "what went through the switch: podswitch show ports"
"$BIN" show ports
step "drops by numbered reason (non-zero): podswitch show stats"
"$BIN" show stats | awk 'NF == 0 { exit } NR == 1 || $3 + 0 > 0'
step "routes"
"$BIN" show routes

cat <<'TXT'

The lab is still up. Try:
  target/release/podswitch lab probe --from x/a --to pod/y/b:80 pod/z/c:81/udp
  target/release/podswitch lab exec x/a -- ping 10.244.0.10
  target/release/podswitch show stats --json
  edit examples/lab-9pods/*.yaml (the lab and the switch apply edits live)
  target/release/podswitch lab down        # removes everything the lab made
TXT
