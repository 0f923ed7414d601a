# Installs what podswitch needs to build and test, if missing. Sourced by the scripts.
# Debian packages: the BPF toolchain (clang, libelf, zlib), the tools the lab and tests drive.
PODSWITCH_DEBS=(clang libelf-dev zlib1g-dev pkg-config m4 ethtool iproute2 iputils-ping netsniff-ng procps python3 iptables)

podswitch_need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "note: not root: integration tests that need network namespaces will report SKIPPED" >&2
    return 1
  fi
}

podswitch_install_debs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    return 1
  fi
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

podswitch_install_rust() {
  if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (rustup) first" >&2
    return 1
  fi
}

# promtool (lints the metrics exposition in control's metrics tests) is taken out of Debian's
# `prometheus` package (19 MB) rather than installing the package, which would pull a web UI's
# JavaScript libraries and start a Prometheus server on :9090, the switch's own metrics port.
podswitch_install_promtool() {
  command -v promtool >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "promtool missing (run as root, or install Debian's prometheus)" >&2
    return 1
  fi
  local dir rc
  dir=$(mktemp -d)
  chmod 755 "$dir" # apt-get download fetches as the _apt user
  { (cd "$dir" && apt-get download -qq prometheus 2>/dev/null) ||
      (apt-get update -qq && cd "$dir" && apt-get download -qq prometheus); } &&
    dpkg-deb --fsys-tarfile "$dir"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$dir/promtool" &&
    install -m 755 "$dir/promtool" /usr/local/bin/promtool
  rc=$?
  rm -rf "$dir"
  return $rc
}
