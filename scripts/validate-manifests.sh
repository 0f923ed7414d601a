#!/usr/bin/env bash
# Validates every Kubernetes manifest of the project (examples/**/*.yaml|yml and
# scripts/deploy/*.yaml) against the API schemas of one Kubernetes version, strictly (unknown
# fields are errors) and with unknown kinds or apiVersions counted as failures, using the PyPI
# package kubernetes-validate. Installs it when missing (pip --target into the cargo target
# directory, so the system's Python is left alone).
#
#   scripts/validate-manifests.sh [FILE...]     # default: every manifest of the project
#
# Environment: K8S_VERSION (default 1.33.0), PYTHON (default python3).
# Exit status: 0 all valid; 1 a manifest is invalid (the validator's message is printed);
# 2 the validator cannot be installed or run.
set -uo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-1.33.0}
PY=${PYTHON:-python3}
PKG='kubernetes-validate>=1.33,<2'
CACHE="${CARGO_TARGET_DIR:-$PWD/target}/kubernetes-validate-py"
export PYTHONPATH="$CACHE${PYTHONPATH:+:$PYTHONPATH}"

die() { echo "validate-manifests: $*" >&2; exit 2; }

command -v "$PY" >/dev/null || die "no $PY: install python3 (Debian: apt-get install python3 python3-pip)"
if ! "$PY" -c 'import kubernetes_validate' 2>/dev/null; then
  echo "validate-manifests: installing $PKG with pip into $CACHE" >&2
  "$PY" -m pip --version >/dev/null 2>&1 || "$PY" -m ensurepip --user >/dev/null 2>&1 ||
    die "$PY has no pip (Debian: apt-get install python3-pip)"
  mkdir -p "$CACHE"
  if ! log=$("$PY" -m pip install --disable-pip-version-check --no-input --quiet --upgrade --target "$CACHE" "$PKG" 2>&1); then
    echo "$log" >&2
    die "FAILED to install kubernetes-validate with pip (is PyPI reachable?); the manifests were NOT validated"
  fi
  "$PY" -c 'import kubernetes_validate' 2>/dev/null || die "kubernetes-validate installed but cannot be imported"
fi

schemas=$("$PY" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')
[ -d "$schemas/v$K8S_VERSION-local-strict" ] ||
  die "kubernetes-validate $("$PY" -m kubernetes_validate --version 2>&1) ships no schemas for Kubernetes $K8S_VERSION (it has: $(ls "$schemas" | grep -v strict | tr '\n' ' '))"

if [ $# -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(find examples scripts/deploy -type f \( -name '*.yaml' -o -name '*.yml' \) | LC_ALL=C sort)
fi
[ ${#files[@]} -gt 0 ] || die "no manifest found"

out=$("$PY" -m kubernetes_validate --kubernetes-version "$K8S_VERSION" --strict "${files[@]}" 2>&1)
rc=$?
# Unknown kinds and apiVersions only warn ("Couldn't find schema"): a typo in an apiVersion
# would pass unseen, so they fail here too.
bad=$(printf '%s\n' "$out" | grep -E '^(ERROR|WARN)|Couldn.t (find|parse)' || true)
if [ $rc -ne 0 ] || [ -n "$bad" ]; then
  printf '%s\n' "${bad:-$out}" >&2
  echo "validate-manifests: FAILED against Kubernetes $K8S_VERSION (strict)" >&2
  exit 1
fi
resources=$(printf '%s\n' "$out" | grep -c ' passed for resource ' || true)
echo "validate-manifests: ${#files[@]} files, $resources resources valid against Kubernetes $K8S_VERSION (strict)"
