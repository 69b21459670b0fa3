#!/usr/bin/env bash
# Debian's headless Chromium + chromedriver for the demo page's real-browser test
# (tests/test_ui_browser.py drives it with Selenium; Playwright's own browser download
# cannot work offline). Prometheus' promtool validates deploy/prometheus/alerts.yml.
# Idempotent and quiet; never fails the build: without them those tests skip and say why.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser.sh: no apt-get; the browser test and promtool check will skip" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "browser.sh: not root and no passwordless sudo; the browser test will skip" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { timeout 300 $SUDO apt-get update -qq >/dev/null &&
       timeout 900 $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
  echo "browser.sh: installing ${need[*]} failed; the tests needing them will skip" >&2
fi
exit 0
