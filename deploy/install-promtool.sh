#!/bin/sh
# promtool, for `promtool test rules` on deploy/prometheus (make slo-rules-test).
# Debian's `prometheus` package has it; only the promtool binary is unpacked
# (into $1, default .venv/bin), so no Prometheus server is installed or started
# and no root is needed. Prints the path of the promtool to use.
set -eu
dest="${1:-.venv/bin}"
if [ -z "${MERIDIAN_PROMTOOL_FORCE:-}" ]; then
  if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
  if [ -x "$dest/promtool" ]; then echo "$dest/promtool"; exit 0; fi
fi
fail() {
  echo "meridian: cannot install promtool ($1): install Debian's prometheus package" \
    "(apt-get install prometheus) or put promtool on PATH" >&2
  exit 1
}
command -v apt-get >/dev/null 2>&1 || fail "no apt-get on this machine"
command -v dpkg-deb >/dev/null 2>&1 || fail "no dpkg-deb on this machine"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
  # The package lists may be missing (a fresh container): refresh them if we may.
  if [ "$(id -u)" -eq 0 ]; then apt-get update >/dev/null 2>&1 || true; fi
  (cd "$work" && apt-get download prometheus >/dev/null 2>&1) || fail "apt-get download prometheus failed"
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/root" || fail "cannot unpack the package"
mkdir -p "$dest"
cp "$work/root/usr/bin/promtool" "$dest/promtool"
chmod +x "$dest/promtool"
"$dest/promtool" --version >/dev/null 2>&1 || fail "the unpacked promtool does not run"
echo "$dest/promtool"
