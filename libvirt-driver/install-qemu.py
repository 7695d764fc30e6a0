#!/usr/bin/env python3
"""meson install: puts the patched QEMU at <prefix>/<libexecdir>/aggvm, where
aggvm-qemu and aggvm-noded look for it, if it was built (make qemu)."""
import os
import shutil
import sys

built, rel_dir = sys.argv[1], sys.argv[2]
prefix = os.environ["MESON_INSTALL_DESTDIR_PREFIX"]
dest = os.path.join(prefix, rel_dir)
if not os.path.exists(built):
    print(f"aggvm: the patched QEMU is not built ({built}); run `make qemu`, then install again")
    sys.exit(0)
os.makedirs(dest, exist_ok=True)
shutil.copy2(built, os.path.join(dest, "qemu-system-x86_64"))
print(f"Installing {built} to {dest}")
