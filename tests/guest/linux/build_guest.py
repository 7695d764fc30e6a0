#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Builds the pieces of aggvm's Linux test guest.

  build_guest.py kernel --out-dir DIR
      Fetches Debian's cloud kernel package with `apt-get download` (into a
      cache outside the source tree), extracts it with `dpkg-deb -x`, checks
      that what the guest needs is built in, and writes DIR/vmlinuz and
      DIR/kernel.config.

  build_guest.py initramfs --out FILE --init INIT --busybox BUSYBOX --bin EXE...
      Writes a gzip'd newc cpio archive: busybox with its applet links, the
      /init script and the static workloads.  The archive is written here
      rather than by cpio(1) so that /dev/console (which the kernel opens
      before /init runs) can be a device node without building as root, and
      so that the output is byte-for-byte reproducible.

Stdlib only.  Environment:
  AGGVM_LINUX_KERNEL_PKG  kernel package to use (default: what the
                          linux-image-cloud-amd64 metapackage depends on)
  AGGVM_LINUX_CACHE       download cache (default
                          ${XDG_CACHE_HOME:-~/.cache}/aggvm/linux)
"""

import argparse
import gzip
import io
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

METAPACKAGE = "linux-image-cloud-amd64"
APT_TIMEOUT_S = 600

# What the guest needs from the kernel without loading a single module.
REQUIRED_CONFIG = {
    "CONFIG_SMP": "y",
    "CONFIG_NUMA": "y",
    "CONFIG_ACPI": "y",
    "CONFIG_ACPI_NUMA": "y",
    "CONFIG_SERIAL_8250": "y",
    "CONFIG_SERIAL_8250_CONSOLE": "y",
    "CONFIG_BLK_DEV_INITRD": "y",
    "CONFIG_RD_GZIP": "y",
    "CONFIG_DEVTMPFS": "y",
    "CONFIG_PROC_FS": "y",
    "CONFIG_SYSFS": "y",
}


# Modules the initramfs loads for a virtio-blk disk, in load order (the
# cloud kernel builds them as modules), then those for a virtio-net NIC, and
# for the ACPI power button (`virsh shutdown` of a guest booted with
# aggvm.hold=1).
VIRTIO_BLK_MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
                      "virtio_pci", "virtio_blk")
GUEST_MODULES = VIRTIO_BLK_MODULES + ("failover", "net_failover", "virtio_net", "button", "evdev")


class BuildError(Exception):
    pass


def run(cmd, timeout=APT_TIMEOUT_S, **kwargs):
    """Runs a command, raising BuildError with its output on failure (also
    build_disk.py's)."""
    # A long command line (mmdebstrap's hooks) is named by its first words.
    name = " ".join(cmd) if len(" ".join(cmd)) <= 160 else " ".join(cmd[:3]) + " ..."
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True,
                              timeout=timeout, **kwargs)
    except FileNotFoundError as e:
        raise BuildError(f"{cmd[0]} not found ({e}): scripts/install-deps.sh installs it") from e
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"{name}: no answer in {timeout} s") from e
    except subprocess.CalledProcessError as e:
        tail = "\n".join((e.stderr or e.stdout or "").strip().splitlines()[-30:])
        raise BuildError(f"{name} failed ({e.returncode}):\n{tail}") from e


def candidate_field(pkg, field):
    """A field of the candidate version of pkg, as apt would install it."""
    policy = run(["apt-cache", "policy", pkg]).stdout
    m = re.search(r"^\s*Candidate:\s*(\S+)", policy, re.M)
    if not m or m.group(1) == "(none)":
        raise BuildError(f"apt knows no candidate for {pkg}; run `apt-get update` "
                         "(scripts/install-deps.sh does)")
    version = m.group(1)
    show = run(["apt-cache", "show", f"{pkg}={version}"]).stdout
    m = re.search(rf"^{field}:\s*(.*)$", show, re.M)
    return version, (m.group(1).strip() if m else "")


def resolve_kernel_package():
    """(package, version): the override, else the metapackage's kernel."""
    pkg = os.environ.get("AGGVM_LINUX_KERNEL_PKG")
    if not pkg:
        _, depends = candidate_field(METAPACKAGE, "Depends")
        m = re.search(r"(linux-image-[^\s,(]+-cloud-amd64(?:-unsigned)?)", depends)
        if not m:
            raise BuildError(f"{METAPACKAGE} depends on no cloud kernel: '{depends}'")
        pkg = m.group(1)
    version, _ = candidate_field(pkg, "Package")
    return pkg, version


def cache_dir():
    env = os.environ.get("AGGVM_LINUX_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aggvm" / "linux"


def fetch_deb(pkg, version):
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    # apt names the file with the version's ':' escaped as %3a.
    name = f"{pkg}_{version.replace(':', '%3a')}_amd64.deb"
    deb = cache / name
    if deb.is_file():
        return deb
    print(f"build_guest: apt-get download {pkg}={version} into {cache}", file=sys.stderr)
    # Download into a scratch directory first: an interrupted fetch must not
    # leave a truncated .deb that looks cached.
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        run(["apt-get", "download", f"{pkg}={version}"], cwd=tmp)
        got = Path(tmp) / name
        if not got.is_file():
            raise BuildError(f"apt-get download left no {name} in {tmp}")
        os.replace(got, deb)
    return deb


def read_config(path):
    config = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
        if m:
            config[m.group(1)] = m.group(2)
    return config


def build_kernel(args):
    pkg, version = resolve_kernel_package()
    deb = fetch_deb(pkg, version)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        run(["dpkg-deb", "-x", str(deb), tmp])
        boot = Path(tmp) / "boot"
        images = sorted(boot.glob("vmlinuz-*"))
        configs = sorted(boot.glob("config-*"))
        if len(images) != 1 or len(configs) != 1:
            raise BuildError(f"{deb.name}: expected one vmlinuz and one config in /boot, "
                             f"found {[p.name for p in boot.iterdir()]}")
        config = read_config(configs[0])
        missing = [f"{k}={v} (is {config.get(k, 'unset')})"
                   for k, v in REQUIRED_CONFIG.items() if config.get(k) != v]
        if missing:
            raise BuildError(f"{pkg} lacks built-in support the guest needs: "
                             + ", ".join(missing))
        shutil.copyfile(configs[0], out / "kernel.config")
        for name in GUEST_MODULES:
            found = sorted(Path(tmp).glob(f"lib/modules/*/kernel/**/{name}.ko"))
            if len(found) != 1:
                raise BuildError(f"{deb.name}: expected one {name}.ko, found {len(found)}")
            shutil.copyfile(found[0], out / f"{name}.ko")
        # Replace atomically so a concurrent reader never sees half a kernel.
        shutil.copyfile(images[0], Path(tmp) / "vmlinuz.new")
        os.replace(Path(tmp) / "vmlinuz.new", out / "vmlinuz")
    print(f"build_guest: {out / 'vmlinuz'} from {pkg} {version}", file=sys.stderr)


class Newc:
    """A writer for the cpio 'newc' format the kernel unpacks
    (Documentation/driver-api/early-userspace/buffer-format.rst)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0), nlink=1):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name_b), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(name_b)
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self):
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def directory(self, name, perm=0o755):
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name, data, perm=0o755):
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name, major, minor, perm=0o600):
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self):
        self.ino = 0
        self._entry("TRAILER!!!", 0, nlink=1)
        return self.buf.getvalue()


def require_static(path):
    """Refuses a dynamically linked ELF: the initramfs has no libc."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BuildError(f"{path}: not a little-endian 64-bit ELF")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            raise BuildError(f"{path}: dynamically linked; the guest needs it static")


def stripped(path):
    """The binary without debug info (the guest has no debugger), if strip exists."""
    strip = shutil.which("strip")
    if not strip:
        return Path(path).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bin"
        run([strip, "-o", str(out), str(path)])
        return out.read_bytes()


def busybox_applets(busybox):
    names = run([busybox, "--list"]).stdout.split()
    if "sh" not in names or "poweroff" not in names:
        raise BuildError(f"{busybox} lacks sh or poweroff")
    return names


def build_initramfs(args):
    require_static(args.busybox)
    for exe in args.bin:
        require_static(exe)
    cpio = Newc()
    for d in ("bin", "dev", "proc", "sys", "tmp", "root"):
        cpio.directory(d)
    # The kernel opens /dev/console for /init's stdio before devtmpfs is up.
    cpio.chardev("dev/console", 5, 1)
    cpio.file("init", Path(args.init).read_bytes())
    cpio.file("bin/busybox", Path(args.busybox).read_bytes())
    for applet in busybox_applets(args.busybox):
        if applet != "busybox":
            cpio.symlink(f"bin/{applet}", "busybox")
    for exe in args.bin:
        cpio.file(f"bin/{Path(exe).name}", stripped(exe))
    if args.module:
        cpio.directory("lib")
        cpio.directory("lib/modules")
    for ko in args.module:
        cpio.file(f"lib/modules/{Path(ko).name}", Path(ko).read_bytes(), perm=0o644)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        # mtime=0 and no file name: the same inputs give the same bytes.
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0, filename="") as gz:
            gz.write(cpio.finish())
    os.replace(tmp, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kernel", help="fetch and extract the cloud kernel")
    k.add_argument("--out-dir", required=True)
    i = sub.add_parser("initramfs", help="write the initramfs")
    i.add_argument("--out", required=True)
    i.add_argument("--init", required=True)
    i.add_argument("--busybox", required=True)
    i.add_argument("--bin", nargs="+", default=[])
    i.add_argument("--module", nargs="+", default=[],
                   help="kernel modules for /lib/modules, loaded by /init in this order")
    args = parser.parse_args()
    try:
        if args.cmd == "kernel":
            build_kernel(args)
        else:
            build_initramfs(args)
    except (BuildError, OSError) as e:
        print(f"build_guest: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
