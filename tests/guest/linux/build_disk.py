#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Builds aggvm's Debian disk guest: a qcow2 root file system from Debian's
archive, with its kernel and initramfs beside it for a direct kernel boot.

  build_disk.py --out-dir DIR --bin EXE... --files RUN SERVICE NETWORK

  DIR/debian.qcow2    ext4 root file system (whole disk, label aggvm-root):
                      Debian bookworm, minbase plus systemd, udev, the cloud
                      kernel, iproute2, wget, stress-ng, fio, libgomp1, e2fsprogs;
                      aggvm's static workloads in /usr/local/bin, their runner
                      /usr/local/sbin/aggvm-run and aggvm-workloads.service
  DIR/debian-vmlinuz  the image's kernel (/boot/vmlinuz-*)
  DIR/debian-initrd.img  the image's initramfs, made by Debian's initramfs-tools
                      with only the modules that mount the root
  DIR/debian-packages.txt  every package and version in the image

mmdebstrap makes the tree from the same archive the host's apt uses (override:
AGGVM_DEBIAN_MIRROR, default http://deb.debian.org/debian, with -security
beside it), mkfs.ext4 -d turns it into a file system without a loop mount,
qemu-img converts it to qcow2.  Needs root (mmdebstrap --mode=root: its
chroot runs the packages' maintainer scripts as a real root, and mkfs copies
their owners).  The guest boots with root=/dev/vda; root's password is empty
(a test image: log in on the serial console).
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import build_guest  # same directory: its run() and BuildError

SUITE = "bookworm"
PACKAGES = ["systemd-sysv", "udev", "linux-image-cloud-amd64", "iproute2", "wget",
            "stress-ng", "fio", "libgomp1", "e2fsprogs", "kmod", "procps"]
# Smaller image, same system: no manual pages, translations or docs.
DPKG_EXCLUDES = ["path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*",
                 "path-include=/usr/share/locale/locale.alias", "path-exclude=/usr/share/doc/*",
                 "path-include=/usr/share/doc/*/copyright"]
# Timers a test guest has no use for, which would start work mid-test, and
# services that only compete with the boot for its vCPUs: logins on virtual
# consoles the guest has no display for (getty-static starts five of them
# where dbus is not installed), and the reaper of e2scrub's snapshots, which
# nothing here takes.  The serial console keeps its login prompt.
MASKED_UNITS = ["apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                "fstrim.timer", "dpkg-db-backup.timer", "getty@tty1.service",
                "getty-static.service", "e2scrub_reap.service"]
# Modules the initramfs needs to mount the root: the guest's disk is
# virtio-blk on PCI, its ext4 built into the cloud kernel.  initramfs-tools'
# default (MODULES=most) packs 190 modules, 51 MB unpacked: under TCG,
# aggregated, systemd started after 81 s with them, after 61-67 s without.
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk"]
DISK_SIZE = "3G"
OUTPUTS = ("debian-vmlinuz", "debian-initrd.img", "debian-packages.txt", "debian.qcow2")
TIMEOUT_S = 1200  # mmdebstrap downloads and installs some 200 packages
BuildError = build_guest.BuildError


def run(cmd):
    return build_guest.run(cmd, timeout=TIMEOUT_S)


def mirrors():
    base = os.environ.get("AGGVM_DEBIAN_MIRROR", "http://deb.debian.org/debian").rstrip("/")
    return [f"deb {base} {SUITE} main", f"deb {base} {SUITE}-updates main",
            f"deb {base}-security {SUITE}-security main"]


def customize_hooks(bins, files):
    """mmdebstrap hooks, run with the tree as $1 once every package is in."""
    run_script, service, network = files
    hooks = [
        'echo aggvm-guest >"$1/etc/hostname"',
        'printf "127.0.0.1 localhost\\n127.0.1.1 aggvm-guest\\n" >"$1/etc/hosts"',
        'echo "LABEL=aggvm-root / ext4 defaults,errors=remount-ro 0 1" >"$1/etc/fstab"',
        f'copy-in {" ".join(str(b) for b in bins)} /usr/local/bin/',
        f'copy-in {run_script} /usr/local/sbin/',
        f'copy-in {service} /etc/systemd/system/',
        f'copy-in {network} /etc/systemd/network/',
        'chroot "$1" systemctl enable aggvm-workloads.service systemd-networkd.service',
        'chroot "$1" systemctl mask ' + " ".join(MASKED_UNITS),
        'chroot "$1" passwd -d root',
        # Aggregated, udev announced the serial console's device 82-120 s
        # after systemd began to wait for it: past systemd's 90 s default,
        # the login prompt was given up.  The drop-in is what fstab's
        # x-systemd.device-timeout writes for a disk.
        'mkdir -p "$1/etc/systemd/system/dev-ttyS0.device.d"',
        'printf "[Unit]\\nJobRunningTimeoutSec=10min\\n" '
        '>"$1/etc/systemd/system/dev-ttyS0.device.d/aggvm-timeout.conf"',
        'echo MODULES=list >"$1/etc/initramfs-tools/conf.d/aggvm-modules"',
        f'printf "%s\\n" {" ".join(INITRAMFS_MODULES)} >>"$1/etc/initramfs-tools/modules"',
        'chroot "$1" update-initramfs -u -k all',
        # No nested virtualisation in a test guest: udev would load kvm for
        # the vCPU's modalias and the module would only complain.
        'printf "blacklist kvm\\nblacklist kvm_amd\\nblacklist kvm_intel\\n" '
        '>"$1/etc/modprobe.d/aggvm-no-kvm.conf"',
        'chroot "$1" dpkg-query -W -f "${Package} ${Version}\\n" >"$1/root/manifest.txt"',
    ]
    return [a for h in hooks for a in ("--customize-hook", h)]


def build(args):
    if os.geteuid() != 0:
        raise BuildError("the Debian disk guest is built as root (mmdebstrap --mode=root, "
                         "mkfs.ext4 -d keeping owners); run the build as root")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bins = [Path(b).resolve() for b in args.bin]
    files = [Path(f).resolve() for f in args.files]
    with tempfile.TemporaryDirectory(dir=out, prefix="rootfs-") as tmp:
        tree = Path(tmp) / "tree"
        print(f"build_disk: mmdebstrap {SUITE} ({len(PACKAGES)} packages beyond minbase)",
              file=sys.stderr, flush=True)
        cmd = ["mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
               "--include=" + ",".join(PACKAGES)]
        cmd += [a for opt in DPKG_EXCLUDES for a in ("--dpkgopt", opt)]
        cmd += customize_hooks(bins, files)
        cmd += [SUITE, str(tree)] + mirrors()
        run(cmd)
        boot = tree / "boot"
        kernels = sorted(boot.glob("vmlinuz-*"))
        initrds = sorted(boot.glob("initrd.img-*"))
        if len(kernels) != 1 or len(initrds) != 1:
            raise BuildError(f"expected one kernel and one initramfs in the image's /boot, found "
                             f"{[p.name for p in boot.iterdir()]}")
        shutil.copyfile(kernels[0], Path(tmp) / "debian-vmlinuz")
        shutil.copyfile(initrds[0], Path(tmp) / "debian-initrd.img")
        shutil.copyfile(tree / "root" / "manifest.txt", Path(tmp) / "debian-packages.txt")
        raw = Path(tmp) / "root.raw"
        print(f"build_disk: mkfs.ext4 -d ({DISK_SIZE}), qemu-img convert to qcow2",
              file=sys.stderr, flush=True)
        run(["mkfs.ext4", "-q", "-L", "aggvm-root", "-d", str(tree), str(raw), DISK_SIZE])
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
             str(Path(tmp) / "debian.qcow2")])
        # Each output replaced whole: a reader never sees half an image.
        for name in OUTPUTS:
            os.replace(Path(tmp) / name, out / name)
    size = (out / "debian.qcow2").stat().st_size
    kernel = kernels[0].name.removeprefix("vmlinuz-")
    count = len((out / "debian-packages.txt").read_text().splitlines())
    print(f"build_disk: {out / 'debian.qcow2'}: Debian {SUITE}, kernel {kernel}, {count} packages, "
          f"{size >> 20} MiB", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--bin", nargs="+", required=True, help="static workloads for /usr/local/bin")
    p.add_argument("--files", nargs=3, required=True, metavar=("RUN", "SERVICE", "NETWORK"))
    args = p.parse_args()
    try:
        build(args)
    except BuildError as e:
        print(f"build_disk: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
