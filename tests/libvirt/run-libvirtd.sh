#!/bin/sh
# run-libvirtd.sh STATE_DIR AGGVM_CONF_DIR WRAPPER_SYSCONFDIR
#
# Runs under `unshare --mount`: gives libvirtd its own /etc/libvirt,
# /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and
# pid file (all under STATE_DIR, so the machine's own libvirt, if any, is
# untouched), and
# aggvm-qemu its configuration (WRAPPER_SYSCONFDIR/aggvm, from
# AGGVM_CONF_DIR), then becomes libvirtd.
set -eu
state=$1 conf=$2 sysconfdir=$3
mount --make-rprivate /
for d in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt \
         log:/var/log/libvirt; do
    mkdir -p "$state/${d%%:*}" "${d#*:}"
    mount --bind "$state/${d%%:*}" "${d#*:}"
done
mkdir -p "$sysconfdir/aggvm"
mount --bind "$conf" "$sysconfdir/aggvm"
# Its pid file too: /run/libvirtd.pid would collide with a libvirtd the
# machine runs itself.
exec /usr/sbin/libvirtd --config /etc/libvirt/libvirtd.conf --pid-file "$state/libvirtd.pid"
