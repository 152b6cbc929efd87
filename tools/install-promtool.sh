#!/bin/sh
# promtool, which the metrics tests check davitd's exposition with (`promtool check metrics`).
# It ships in Debian's `prometheus` package; installing that package would also install (and
# under systemd start) a Prometheus server, so only promtool is taken out of the package and put
# beside the venv's python, where the tests look for it. Debian-only; elsewhere put a promtool on
# PATH. A failure here is a warning; under CI=true the metrics tests then fail, never skip.
# Usage: tools/install-promtool.sh PYTHON
set -u
bindir="$(dirname "$1")"
if command -v promtool >/dev/null 2>&1 || [ -x "$bindir/promtool" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: no apt-get here: install promtool (Prometheus) on PATH for the metrics tests"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1
    (cd "$work" && apt-get download prometheus >/dev/null 2>&1) \
        || { echo "warning: apt-get could not download Debian's prometheus package (for promtool)"; exit 0; }
fi
dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool \
    && install -m 0755 "$work/usr/bin/promtool" "$bindir/promtool" \
    || echo "warning: promtool could not be taken out of Debian's prometheus package"
exit 0
