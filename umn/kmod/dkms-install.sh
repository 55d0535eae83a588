#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Install /dev/ummunotify with DKMS (rebuilt on every kernel upgrade).
#
#   sudo umn/kmod/dkms-install.sh [KERNEL]          # from the repository
#   sudo umn/kmod/dkms-install.sh --remove          # unload, dkms remove --all
#
# KERNEL defaults to the running one (`uname -r`); its headers must be
# installed (linux-headers-$KERNEL on Debian/Ubuntu, kernel-devel on
# Fedora/RHEL), and dkms. Copies the sources (Kbuild, Makefile,
# ummunotify.c, dkms.conf, and the UAPI header into include/) to
# /usr/src/ummunotify-<version> (the version is dkms.conf's
# PACKAGE_VERSION), then `dkms add`, `dkms build`, `dkms install`, and
# loads the module. Any step failing stops the script with its status.
# `cargo xtask kmod --dkms` runs exactly this in the 6.12 VM before the
# device tests (docs/KERNEL.md).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# The UAPI header: ../include in the repository, ./include in a copy.
if [ -f "$here/include/ummunotify.h" ]; then
    header="$here/include/ummunotify.h"
else
    header="$here/../include/ummunotify.h"
fi
ver=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$here/dkms.conf")
[ -n "$ver" ] || { echo "dkms-install: no PACKAGE_VERSION in $here/dkms.conf" >&2; exit 1; }
command -v dkms >/dev/null || { echo "dkms-install: dkms is not installed (apt-get install dkms)" >&2; exit 1; }

if [ "${1:-}" = "--remove" ]; then
    if lsmod | grep -q '^ummunotify '; then
        rmmod ummunotify
    fi
    dkms remove "ummunotify/$ver" --all
    rm -rf "/usr/src/ummunotify-$ver"
    exit 0
fi

kernel=${1:-$(uname -r)}
[ -e "/lib/modules/$kernel/build/Makefile" ] || {
    echo "dkms-install: no headers for $kernel (/lib/modules/$kernel/build)" >&2
    exit 1
}
src="/usr/src/ummunotify-$ver"
# A previous install of the same version: replace it.
if dkms status "ummunotify/$ver" 2>/dev/null | grep -q .; then
    dkms remove "ummunotify/$ver" --all
fi
rm -rf "$src"
mkdir -p "$src/include"
cp "$here/Kbuild" "$here/Makefile" "$here/ummunotify.c" "$here/dkms.conf" "$src/"
cp "$header" "$src/include/"
dkms add "ummunotify/$ver"
dkms build "ummunotify/$ver" -k "$kernel"
dkms install "ummunotify/$ver" -k "$kernel"
dkms status "ummunotify/$ver"
if [ "$kernel" = "$(uname -r)" ]; then
    modprobe ummunotify
    echo "dkms-install: loaded $(modinfo -n ummunotify)"
fi
