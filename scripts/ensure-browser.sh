#!/usr/bin/env bash
# The Prefect UI tests drive Debian's chromium through Playwright; install it if it is missing.
# (Playwright comes with the dev dependencies; no browser is ever downloaded by Playwright.)
set -u
[ -x /usr/bin/chromium ] && exit 0
if command -v apt-get > /dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && command -v sudo > /dev/null 2>&1 && sudo="sudo -n"
  $sudo apt-get install -y -q chromium > /tmp/batchgate-chromium-install.log 2>&1 \
    || { $sudo apt-get update -q > /dev/null 2>&1 && $sudo apt-get install -y -q chromium \
         > /tmp/batchgate-chromium-install.log 2>&1; }
fi
[ -x /usr/bin/chromium ] || echo "warning: chromium is not installed; the browser tests will fail in CI" >&2
exit 0
