#!/usr/bin/env bash
# Build mixrec's local base image — Debian bookworm + Python 3.11, from Debian packages only —
# straight into containers-storage (what buildah/podman/skopeo use), without a Docker daemon.
#
# Use it where the public python:3.11-slim cannot be pulled (no Docker Hub). With internet,
# the public base works as well: `mixrec image build --base public`.
#
#   deploy/base-image.sh [TAG]           default TAG: localhost/mixrec-base:bookworm-py3.11
#
# Env: DEBIAN_MIRROR (default: the first deb.debian.org-style URI of this machine's apt
# sources, else http://deb.debian.org/debian), SOURCE_DATE_EPOCH (default: fixed, so two
# runs against the same mirror state give the same root filesystem).
# Needs root, mmdebstrap and podman (apt-get install mmdebstrap podman), and pip on the host
# (to fetch the uv wheel from PyPI: the image build then needs no network at all).
set -euo pipefail

TAG=${1:-localhost/mixrec-base:bookworm-py3.11}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}  # 2025-01-01T00:00:00Z
UV_VERSION=${UV_VERSION:-0.13.9}  # BentoML's Dockerfile installs uv >= 0.13.4 with pip unless one is on PATH
PIP=${PIP:-python3 -m pip}

for tool in mmdebstrap podman; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install $tool)" >&2; exit 3; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# uv: BentoML's generated Dockerfile creates /app/.venv and installs the Bento's packages
# with it. Shipping the binary in the base means no pip and no PyPI access inside the build
# (where this machine's TLS-intercepting proxy is not trusted anyway).
$PIP download -q --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.11 \
  -d "$work/uv" "uv==$UV_VERSION"
uv_whl=$(ls "$work"/uv/uv-"$UV_VERSION"-*.whl)
echo "uv wheel: $(basename "$uv_whl") sha256 $(sha256sum "$uv_whl" | cut -d' ' -f1)"
export UV_WHL=$uv_whl

# minbase + the interpreter + OpenMP (lightfm); everything mixrec needs then goes into
# /app/.venv, never into the system Python. Docs, man pages and locales are dropped; apt
# lists and caches are cleaned.
mmdebstrap --variant=minbase --mode=root --format=tar \
  --include=python3,python3.11,ca-certificates,libgomp1 \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='python3 -c "import os,sys,zipfile; z=zipfile.ZipFile(os.environ[\"UV_WHL\"]); [open(sys.argv[1]+\"/usr/local/bin/\"+os.path.basename(n),\"wb\").write(z.read(n)) for n in z.namelist() if n.endswith((\"/scripts/uv\",\"/scripts/uvx\"))]" "$1" && chmod 0755 "$1"/usr/local/bin/uv "$1"/usr/local/bin/uvx' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
  bookworm "$work/rootfs.tar" "$MIRROR"

podman import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "mixrec base: Debian bookworm minbase + python3.11 + uv $UV_VERSION (deploy/base-image.sh, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)" \
  "$work/rootfs.tar" "$TAG" >/dev/null
echo "rootfs sha256: $(sha256sum "$work/rootfs.tar" | cut -d' ' -f1)"
podman image inspect --format '{{.Id}} {{.Size}}' "$TAG"
echo "$TAG"
