#!/usr/bin/env bash
# Creates .venv with every backend and installs keras_effconv (editable), offline data included.
# Usage: bash scripts/setup.sh        (idempotent; re-running only fills what is missing)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

# A Vulkan software GPU (Mesa >= 25 from bookworm-backports) lets the LiteRT
# export verify models on the GPU accelerator; without it those checks are skipped.
if ! dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q '^2[5-9]\.'; then
  bash scripts/install_mesa.sh || echo "setup.sh: Mesa install failed; GPU checks will be skipped" >&2
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[all]"
