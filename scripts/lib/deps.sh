# Installs what podswitch needs to build and test, if missing. Sourced by the scripts.
# Debian packages: the BPF toolchain (clang, libelf, zlib), the tools the lab and tests drive.
PODSWITCH_DEBS=(clang libelf-dev zlib1g-dev pkg-config m4 ethtool iproute2 iputils-ping netsniff-ng procps python3)

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
