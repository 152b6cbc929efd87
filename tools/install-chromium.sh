#!/bin/sh
# Headless Chromium, which the `davit report` tests render pages with (tests/fixtures/chromium.py):
# Debian's `chromium` package. Installed when missing and this runs as root with apt-get; anywhere
# else a warning. Without it those tests skip, and under CI=true they fail (never skip).
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
        || echo "warning: apt-get could not install chromium; the report rendering tests will not run"
else
    echo "warning: chromium is missing (apt-get install chromium); the report rendering tests will not run"
fi
exit 0
