#!/usr/bin/env bash
# Debian packages for daemonless image builds (tests/test_image.py, make image):
# buildah, podman, skopeo, runc, mmdebstrap, docker-registry (+ apache2-utils: htpasswd for the
# registry-auth test). Idempotent; never fails the build: without them the image tests skip and
# say why (same pattern as postgres.sh).
set -u
TOOLS=(buildah podman skopeo runc mmdebstrap docker-registry apache2-utils)
COMMANDS=(buildah podman skopeo runc mmdebstrap docker-registry htpasswd)
missing=()
for t in "${COMMANDS[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "image-tools.sh: no apt-get; missing ${missing[*]}: the image test will skip" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "image-tools.sh: not root and no passwordless sudo; missing ${missing[*]}: the image test will skip" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "image-tools.sh: installing ${TOOLS[*]}" >&2
if ! { timeout 300 $SUDO apt-get update -qq >/dev/null &&
       timeout 900 $SUDO apt-get install -y -qq --no-install-recommends "${TOOLS[@]}" >/dev/null; }; then
  echo "image-tools.sh: installing the image tools failed: the image test will skip" >&2
fi
exit 0
