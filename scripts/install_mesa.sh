#!/usr/bin/env bash
# Installs a Vulkan software GPU (Mesa lavapipe) recent enough for LiteRT's GPU
# accelerator, so `keras_effconv.export.check_gpu` can run its GPU-only check on
# machines without a GPU. Debian 12's own Mesa (22.3) is too old; bookworm-backports
# has 25.x. Idempotent; on other distributions it only says what it skipped.
set -euo pipefail

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

if ! [ -r /etc/os-release ] || ! grep -q 'VERSION_CODENAME=bookworm' /etc/os-release; then
  echo "install_mesa.sh: not Debian 12 (bookworm); skipping Mesa install (GPU checks will be skipped)" >&2
  exit 0
fi

if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1
dpkg-query -W -f='${Package} ${Version}\n' mesa-vulkan-drivers libvulkan1
