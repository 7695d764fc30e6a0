#!/usr/bin/env python3
"""Boot testos under QEMU, run its workloads and judge the result.

Exit status: 0 pass, 1 fail, 77 skip (meson's convention; e.g. /dev/kvm
is missing or unusable, or every requested workload reported skip).  A
skip always prints its reason; with CI=true in the environment a missing
prerequisite is a failure (exit 1) instead, so CI cannot pass by skipping.

The guest reports over COM1 ("testos: result workload=... status=...")
and ends QEMU through isa-debug-exit: QEMU exits 1 when the guest passed,
3 when it failed; anything else (0 after a triple fault with -no-reboot,
a QEMU error, the timeout) is a failure.
"""

import argparse
import fcntl
import os
import re
import shlex
import subprocess
import sys
import time

WORKLOADS = ["compute", "counters", "pingpong", "ipi", "sweep", "timer", "tscsync", "devices", "xmc",
             "extint", "ldr"]
# Run only when named (not in "all"): share works alone; the others need the host to act.
NAMED_ONLY = ["share", "nmi", "devloop", "gap", "churn"]
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
SKIP = 77
# Named model: "-cpu host" aborts under this project's KVM.  The guest uses
# no paravirtual feature, and xAPIC only (aggregated mode's user-space APIC).
DEFAULT_CPU = "qemu64,-x2apic"
# qboot boots the PVH kernel in a fraction of SeaBIOS's time under this
# project's KVM, where firmware runs in emulated ring 0.
QBOOT = "/usr/share/qemu/qboot.rom"


def skip(reason):
    """Exit status for a missing prerequisite: 77 (skip), or 1 under CI=true."""
    if os.environ.get("CI") == "true":
        print(f"run_testos: FAIL: {reason} (CI=true: a missing prerequisite is an error, not a skip)")
        return 1
    print(f"run_testos: SKIP: {reason}")
    return SKIP


def kvm_unusable():
    """Why /dev/kvm cannot be used, or None when it can."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot open /dev/kvm: {e.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        if version != 12:
            return f"/dev/kvm API version {version}, expected 12"
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm)
    except OSError as e:
        return f"/dev/kvm ioctl failed: {e.strerror}"
    finally:
        os.close(fd)
    return None


def qemu_command(args, qemu):
    append = f"workload={args.workload}"
    if args.append:
        append += " " + args.append
    accel = args.accel if args.accel == "kvm" else "tcg,thread=multi"
    cmd = [
        qemu, "-machine", args.machine, "-accel", accel, "-cpu", args.cpu,
        "-smp", str(args.smp), "-m", str(args.mem),
        "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-monitor", "none",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-kernel", args.kernel, "-append", append,
    ]
    if args.bios == "qboot" and os.path.exists(QBOOT):
        cmd += ["-bios", QBOOT]
    elif args.bios not in ("qboot", "default"):
        cmd += ["-bios", args.bios]
    return cmd + args.extra


def parse(lines):
    """The banner and result lines as dicts of key=value words."""
    banner, results = None, []
    for line in lines:
        if not line.startswith("testos: "):
            continue
        words = dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
        if line.startswith("testos: result "):
            results.append(words)
        elif line.startswith("testos: vcpus="):
            banner = words
    return banner, results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", required=True, help="the testos ELF")
    ap.add_argument("--accel", choices=["kvm", "tcg"], default="kvm")
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--mem", type=int, default=256, help="guest RAM in MiB")
    ap.add_argument("--workload", default="all", choices=WORKLOADS + NAMED_ONLY + ["all"])
    ap.add_argument("--append", default="", help="more guest options: iters= ms= peer= hz=")
    ap.add_argument("--machine", default="pc", help="pc or q35")
    ap.add_argument("--cpu", default=DEFAULT_CPU)
    ap.add_argument("--bios", default="qboot",
                    help="qboot (default, when installed), default (QEMU's: SeaBIOS) or a path")
    ap.add_argument("--timeout", type=float, default=60, help="seconds before QEMU is killed")
    ap.add_argument("--qemu", default=os.environ.get("AGGVM_QEMU", "/usr/bin/qemu-system-x86_64"))
    ap.add_argument("--log", help="also write the guest's serial output here")
    ap.add_argument("extra", nargs="*", help="extra QEMU arguments (after --)")
    args = ap.parse_args()

    if not os.access(args.qemu, os.X_OK):
        return skip(f"QEMU {args.qemu} not found (set AGGVM_QEMU)")
    if args.accel == "kvm":
        why = kvm_unusable()
        if why:
            return skip(f"KVM not usable: {why}")

    cmd = qemu_command(args, args.qemu)
    print("run_testos: " + shlex.join(cmd), flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=args.timeout)
        out, rc, timed_out = proc.stdout, proc.returncode, False
    except subprocess.TimeoutExpired as e:
        out, rc, timed_out = e.stdout or b"", None, True
    elapsed = time.monotonic() - start
    text = out.decode("utf-8", "replace").replace("\r", "")
    sys.stdout.write(text)
    if args.log:
        with open(args.log, "w", encoding="utf-8") as f:
            f.write(text)

    if args.accel == "kvm" and re.search(r"failed to initialize kvm|Could not access KVM", text, re.I):
        return skip("QEMU could not initialise KVM (see above)")

    banner, results = parse(text.splitlines())
    wanted = WORKLOADS if args.workload == "all" else [args.workload]
    got = {r.get("workload"): r for r in results}
    problems = []
    if timed_out:
        problems.append(f"QEMU killed after the {args.timeout:.0f} s timeout")
    elif rc not in (1, 3):
        problems.append(f"QEMU exited with {rc}, not through isa-debug-exit (1 pass, 3 fail)")
    elif rc == 3:
        problems.append("guest reported failure (isa-debug-exit status 3)")
    if banner is None:
        problems.append("no banner line")
    elif int(banner.get("vcpus", 0)) != args.smp:
        problems.append(f"guest brought up {banner.get('vcpus')} vCPUs, expected {args.smp}")
    for w in wanted:
        if w not in got:
            problems.append(f"no result for workload {w}")
        elif got[w].get("status") not in ("pass", "skip"):
            problems.append(f"workload {w}: status {got[w].get('status')}")

    print(f"run_testos: accel={args.accel} smp={args.smp} mem={args.mem} wall_s={elapsed:.1f}")
    for w in wanted:
        r = got.get(w, {})
        figures = " ".join(f"{k}={v}" for k, v in r.items() if k not in ("workload", "vcpus"))
        print(f"run_testos: {w:9} {figures or 'missing'}")
    if problems:
        for p in problems:
            print(f"run_testos: FAIL: {p}")
        return 1
    if all(got[w].get("status") == "skip" for w in wanted):
        return skip("every requested workload reported skip "
                    f"({', '.join(got[w].get('reason', '?') for w in wanted)})")
    print("run_testos: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
