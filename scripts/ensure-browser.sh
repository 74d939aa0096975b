#!/usr/bin/env bash
# The Prefect UI tests drive Debian's chromium through Playwright; install it if it is missing,
# with Debian's colour emoji font, so the screenshots show emoji as users see them, not boxes.
# (Playwright comes with the dev dependencies; no browser is ever downloaded by Playwright.)
# Idempotent: nothing is installed when both are there already.
set -u
emoji_font() { dpkg-query -W -f='${Status}' fonts-noto-color-emoji 2> /dev/null | grep -q "ok installed"; }
missing=""
[ -x /usr/bin/chromium ] || missing="chromium"
emoji_font || missing="$missing fonts-noto-color-emoji"
[ -z "$missing" ] && exit 0
if command -v apt-get > /dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && command -v sudo > /dev/null 2>&1 && sudo="sudo -n"
  # shellcheck disable=SC2086  # the package names are words
  $sudo apt-get install -y -q $missing > /tmp/batchgate-chromium-install.log 2>&1 \
    || { $sudo apt-get update -q > /dev/null 2>&1 && $sudo apt-get install -y -q $missing \
         > /tmp/batchgate-chromium-install.log 2>&1; }
fi
[ -x /usr/bin/chromium ] || echo "warning: chromium is not installed; the browser tests will fail in CI" >&2
emoji_font || echo "warning: fonts-noto-color-emoji is not installed; screenshots show emoji as boxes" >&2
exit 0
