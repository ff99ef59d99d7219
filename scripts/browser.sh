#!/usr/bin/env bash
# Makes sure Debian's chromium and chromium-driver are installed, for the
# console's browser tests (tests/console.rs). `make test` and `.ci/run` call
# it; without apt-get (or root/sudo) it says so and returns 0, and the
# browser tests then skip outside CI and fail under CI=true.
set -uo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser.sh: no apt-get; install chromium and chromedriver yourself" >&2
    exit 0
fi
SUDO=""
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "browser.sh: not root and no sudo" >&2; exit 0; }
    SUDO="sudo"
fi
echo "browser.sh: installing chromium and chromium-driver (Debian's packages)" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver >&2 || true
exit 0
