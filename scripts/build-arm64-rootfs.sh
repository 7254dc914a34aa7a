#!/usr/bin/env bash
# Build the arm64 Debian root filesystem behind the `rpi4-qemu` device (idempotent).
#
# What it makes, in ${HILBENCH_ARM64_ROOTFS:-${HILBENCH_CACHE:-~/.cache/hilbench}/arm64-rootfs}:
#   Debian 12 (bookworm) arm64 minbase + python3, python3-venv, openssh-server; a user `pi`
#   (key login only); /opt/hilbench/venv with onnxruntime and numpy from aarch64 manylinux_2_28
#   wheels downloaded on this host. The harness (harness/emulators/arm64.py) runs its sshd under
#   qemu-user in a network namespace.
# Quick (well under a second) when done: a stamp file records what was built; a partial build is
# never taken for a finished one (it happens in ROOTFS.partial and is renamed at the end).
# Needs root and: qemu-user-static binfmt-support debootstrap iproute2 (apt-get install them).
# Typical first build: ~8-10 minutes (second stage and apt run under emulation), ~600 MB.
set -euo pipefail

ROOTFS=${HILBENCH_ARM64_ROOTFS:-${HILBENCH_CACHE:-$HOME/.cache/hilbench}/arm64-rootfs}
WHEELS=${HILBENCH_CACHE:-$HOME/.cache/hilbench}/wheels/arm64-rootfs
MIRROR=${HILBENCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
ORT_VERSION=1.31.1
HERE=$(cd "$(dirname "$0")/.." && pwd)
HOST_PY=${HOST_PYTHON:-$HERE/.venv/bin/python}
[ -x "$HOST_PY" ] || HOST_PY=python3
# numpy: the host's version, so both sides run the same numpy
NUMPY_VERSION=${NUMPY_VERSION:-$("$HOST_PY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo 2.4.6)}
APT_IN_ROOTFS="python3 python3-venv openssh-server"
VENV=/opt/hilbench/venv
# Everything that changes the result is in the stamp: change one, and the rootfs is rebuilt.
STAMP_TEXT="hilbench-arm64-rootfs/2 $SUITE $MIRROR ort=$ORT_VERSION numpy=$NUMPY_VERSION apt=[$APT_IN_ROOTFS] user=pi venv=$VENV"

log() { echo "build-arm64-rootfs: $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$(cat "$ROOTFS/.hilbench-ready" 2>/dev/null)" = "$STAMP_TEXT" ]; then
  log "ready: $ROOTFS"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, binfmt)"
missing=()
for tool in qemu-aarch64-static:qemu-user-static update-binfmts:binfmt-support debootstrap:debootstrap \
            ip:iproute2 unshare:util-linux; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
((${#missing[@]} == 0)) || die "missing tools; install them with: apt-get install --no-install-recommends ${missing[*]}"

# binfmt_misc: run arm64 binaries through qemu-aarch64-static (registered with the F flag, so
# the interpreter works inside the chroot too).
[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 \
  || die "cannot register qemu-aarch64 with binfmt_misc (is binfmt-support installed?)"

PARTIAL="$ROOTFS.partial"
# Host PIP_* settings (find-links, extra indexes) must not leak into the chroot's pip: env -i.
in_rootfs() {
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    QEMU_CPU=cortex-a72 chroot "$PARTIAL" "$@"
}
# Mounts for the chroot live in a private mount namespace (unshare -m), so nothing leaks or
# stays mounted on the host if this script is interrupted.
in_rootfs_with_proc() {
  unshare --mount --propagation private sh -c '
    set -e
    mount -t proc proc "$1/proc"
    mount --bind "$2" "$1/proc/cpuinfo"
    mount -t tmpfs -o size=1m hilbench-sys "$1/sys"
    mkdir -p "$1/sys/devices/system/cpu"
    for f in possible present online; do echo 0-3 > "$1/sys/devices/system/cpu/$f"; done
    shift 2
    exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU=cortex-a72 chroot "$@"
  ' sh "$PARTIAL" "$HERE/devices/emulators/rpi4-cpuinfo.txt" "$PARTIAL" "$@"
}

started=$SECONDS
if [ ! -e "$PARTIAL/.stage2-done" ]; then
  rm -rf "$PARTIAL"
  mkdir -p "$PARTIAL"
  log "debootstrap (first stage) $SUITE arm64 from $MIRROR"
  debootstrap --arch=arm64 --variant=minbase --foreign "$SUITE" "$PARTIAL" "$MIRROR" >/dev/null \
    || die "debootstrap first stage failed (network? mirror $MIRROR)"
  log "debootstrap second stage (under qemu-user)"
  in_rootfs /debootstrap/debootstrap --second-stage >/dev/null \
    || die "debootstrap second stage failed; see $PARTIAL/debootstrap/debootstrap.log"
  touch "$PARTIAL/.stage2-done"
fi

if [ ! -e "$PARTIAL/.apt-done" ]; then
  log "apt-get install $APT_IN_ROOTFS (under qemu-user)"
  cp /etc/resolv.conf "$PARTIAL/etc/resolv.conf"
  echo "deb $MIRROR $SUITE main" > "$PARTIAL/etc/apt/sources.list"
  printf '#!/bin/sh\nexit 101\n' > "$PARTIAL/usr/sbin/policy-rc.d"   # start no services
  chmod 755 "$PARTIAL/usr/sbin/policy-rc.d"
  in_rootfs apt-get update -qq
  in_rootfs apt-get install -y -qq --no-install-recommends $APT_IN_ROOTFS >/dev/null
  in_rootfs apt-get clean
  touch "$PARTIAL/.apt-done"
fi

# A login user like a Pi's; '*' (no password) rather than a locked '!' account, which sshd refuses.
in_rootfs id pi >/dev/null 2>&1 || in_rootfs useradd -m -s /bin/bash -p '*' pi
mkdir -p "$PARTIAL/run/sshd" "$PARTIAL/opt/hilbench"

log "aarch64 wheels: onnxruntime==$ORT_VERSION numpy==$NUMPY_VERSION -> $WHEELS"
mkdir -p "$WHEELS"
# manylinux_2_28 explicitly: manylinux2014 resolves to onnxruntime 1.16.3, which crashes under qemu-user.
"$HOST_PY" -m pip download -q --disable-pip-version-check --no-cache-dir -d "$WHEELS" \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --python-version 3.11 \
  --implementation cp --only-binary=:all: "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION" \
  || die "pip download of the aarch64 wheels failed (network? PyPI reachable?)"
rm -rf "$PARTIAL/opt/hilbench/wheels"
cp -r "$WHEELS" "$PARTIAL/opt/hilbench/wheels"

log "venv $VENV with onnxruntime and numpy (under qemu-user)"
rm -rf "$PARTIAL$VENV"
in_rootfs python3 -m venv "$VENV"
in_rootfs "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-index \
  --find-links /opt/hilbench/wheels "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION"
in_rootfs_with_proc "$VENV/bin/python" -c \
  'import numpy, onnxruntime; print("onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)' >&2 \
  || die "onnxruntime does not import in the arm64 venv"

echo "$STAMP_TEXT" > "$PARTIAL/.hilbench-ready"
rm -rf "$ROOTFS"
mv "$PARTIAL" "$ROOTFS"
log "ready: $ROOTFS ($((SECONDS - started)) s, $(du -sh "$ROOTFS" | cut -f1))"
