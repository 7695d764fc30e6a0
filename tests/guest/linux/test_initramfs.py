#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Checks the built initramfs with cpio(1), an implementation independent of
build_guest.py's writer: /init, /dev/console and the workloads must be there
with the right types and modes.  Exits 0, 1, or 77 when cpio is missing."""

import gzip
import shutil
import subprocess
import sys

EXPECTED = {
    # path: (type character of `ls -l`, mode bits that must be set)
    "init": ("-", "rwxr-xr-x"),
    "dev/console": ("c", "rw-------"),
    "bin/busybox": ("-", "rwxr-xr-x"),
    "bin/sh": ("l", "rwxrwxrwx"),
    "bin/poweroff": ("l", "rwxrwxrwx"),
    "bin/aggvm-atomics": ("-", "rwxr-xr-x"),
    "bin/aggvm-stream": ("-", "rwxr-xr-x"),
    "bin/aggvm-topology": ("-", "rwxr-xr-x"),
}


def main():
    if len(sys.argv) != 2:
        print("usage: test_initramfs.py initramfs.cpio.gz")
        return 2
    cpio = shutil.which("cpio")
    if not cpio:
        print("test_initramfs: skip: cpio(1) not installed")
        return 77
    with gzip.open(sys.argv[1], "rb") as f:
        archive = f.read()
    listing = subprocess.run([cpio, "-itv", "--quiet"], input=archive, capture_output=True,
                             timeout=60)
    if listing.returncode != 0:
        print(f"test_initramfs: cpio rejected the archive: {listing.stderr.decode()}")
        return 1
    entries = {}
    for line in listing.stdout.decode().splitlines():
        fields = line.split()
        name = fields[-3] if len(fields) > 2 and fields[-2] == "->" else fields[-1]
        entries[name] = fields[0]
    failures = []
    for path, (kind, perms) in EXPECTED.items():
        got = entries.get(path)
        if got is None:
            failures.append(f"{path} missing")
        elif got[0] != kind or got[1:10] != perms:
            failures.append(f"{path} is {got}, expected {kind}{perms}")
    for f in failures:
        print(f"test_initramfs: FAIL: {f}")
    print(f"test_initramfs: {len(entries)} entries, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
