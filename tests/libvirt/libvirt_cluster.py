# SPDX-License-Identifier: GPL-2.0-or-later
"""A head host with a real libvirtd and worker hosts with aggvm-noded, in the
network namespaces aggvm-harness made (AGGVM_HOST<i>_NETNS/_ADDR).

libvirtd runs in host 0's namespace and in a mount namespace of its own
(run-libvirtd.sh), configured by this directory's libvirtd.conf and
qemu.conf; virsh and aggvmctl reach it through its socket.  Each worker host
runs aggvm-noded with a configuration written from the project's
libvirt-driver/etc/noded.conf.  Domains are made from
docs/examples/aggvm-guest.xml, changed only where this machine differs (the
hosts' addresses, the paths).
"""

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "guest" / "linux"))
from run_linux_guest import KERNEL_ARGS  # noqa: E402
EXAMPLE = REPO / "docs" / "examples" / "aggvm-guest.xml"
NODED_CONF = REPO / "libvirt-driver" / "etc" / "noded.conf"
NS = "https://aggvm.dev/xmlns/libvirt/1"
ET.register_namespace("aggvm", NS)


LOG_PREFIX = "[libvirt-test] "


def log(msg):
    print(f"{LOG_PREFIX}{msg}", flush=True)


def netns_pids(netns):
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Tools:
    def __init__(self, args):
        self.qemu = os.path.abspath(args.qemu)
        self.harness = os.path.abspath(args.harness)
        self.wrapper = os.path.abspath(args.wrapper)
        self.noded = os.path.abspath(args.noded)
        self.aggvmctl = os.path.abspath(args.aggvmctl)
        self.kernel = os.path.abspath(args.kernel)
        self.initrd = os.path.abspath(args.initrd)
        # aggvm-qemu reads <sysconfdir>/aggvm/aggvm.conf, fixed at build time;
        # libvirtd's mount namespace puts the test's configuration there.
        path = subprocess.run([self.wrapper, "--aggvm-config-path"], capture_output=True, text=True,
                              check=True).stdout.strip()
        self.sysconfdir = str(Path(path).parent.parent)


def missing_prerequisite(args):
    """Why these tests cannot run here, or None."""
    for what, path in (("libvirtd", "/usr/sbin/libvirtd"), ("virsh", shutil.which("virsh") or ""),
                       ("unshare", shutil.which("unshare") or ""),
                       ("the patched QEMU", args.qemu), ("aggvm-harness", args.harness),
                       ("aggvm-qemu", args.wrapper), ("aggvm-noded", args.noded),
                       ("aggvmctl", args.aggvmctl)):
        if not path or not os.access(path, os.X_OK):
            return f"{what} ({path or 'not found'}) is missing (scripts/install-deps.sh installs libvirt)"
    if not Path("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so").exists():
        return "libvirt's QEMU driver (libvirt-daemon-driver-qemu) is not installed"
    return None


class Cluster:
    """libvirtd on the first of its hosts, aggvm-noded on every other one.
    Its hosts are the harness's hosts first .. first + hosts - 1, so that
    two clusters (two libvirtd, as on two head hosts) can share one run."""

    def __init__(self, tools, work, hosts, first=0):
        self.tools = tools
        self.work = Path(work)
        self.work.mkdir(exist_ok=True)
        self.hosts = []
        for i in range(first, first + hosts):
            self.hosts.append((os.environ[f"AGGVM_HOST{i}_NETNS"], os.environ[f"AGGVM_HOST{i}_ADDR"]))
        self.key = self.work / "cluster.key"
        self.key.write_bytes(secrets.token_bytes(32))
        self.key.chmod(0o600)
        self.state = self.work / "libvirt"
        self.conf = self.work / "aggvm-etc"
        self.uri = f"qemu:///system?socket={self.state}/run/libvirt-sock"
        self.libvirtd = None
        self.nodeds = {}
        self.domains = set()

    # --- libvirtd -------------------------------------------------------
    def start_libvirtd(self):
        (self.state / "etc").mkdir(parents=True)
        # Each libvirtd is a host of its own: libvirt refuses a migration
        # between two daemons with one host UUID.
        (self.state / "etc" / "libvirtd.conf").write_text(
            (HERE / "libvirtd.conf").read_text() + f'host_uuid = "{uuid.uuid4()}"\n')
        shutil.copy(HERE / "qemu.conf", self.state / "etc")
        self.conf.mkdir()
        (self.conf / "aggvm.conf").write_text(
            f"qemu = {self.tools.qemu}\nconnect-timeout-ms = 3000\n")
        logf = open(self.work / "libvirtd.log", "w")
        self.libvirtd = subprocess.Popen(
            [self.tools.harness, "exec", self.hosts[0][0], "--", "unshare", "--mount",
             str(HERE / "run-libvirtd.sh"), str(self.state), str(self.conf), self.tools.sysconfdir],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        sock = self.state / "run" / "libvirt-sock"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sock.exists() and self.virsh("version", check=False, quiet=True).returncode == 0:
                log(f"libvirtd up on {self.hosts[0][1]}, {self.uri}")
                return
            if self.libvirtd.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError("libvirtd did not start:\n" + (self.work / "libvirtd.log").read_text()[-3000:])

    def virsh(self, *args, check=True, quiet=False, timeout=120):
        cmd = ["virsh", "-c", self.uri] + list(args)
        if not quiet:
            log("$ virsh " + " ".join(args))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if not quiet:
            for line in (r.stdout + r.stderr).strip().splitlines():
                print(f"    {line}", flush=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"virsh {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def aggvmctl(self, *args):
        log("$ aggvmctl " + " ".join(args))
        r = subprocess.run([self.tools.aggvmctl, "-c", self.uri] + list(args), capture_output=True,
                           text=True, timeout=120)
        for line in (r.stdout + r.stderr).strip().splitlines():
            print(f"    {line}", flush=True)
        return r

    def domstate(self, name):
        return self.virsh("domstate", name, "--reason", check=False, quiet=True).stdout.strip()

    def wait_state(self, name, want, timeout):
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.domstate(name)
            if state.startswith(want):
                return state
            time.sleep(0.2)
        return state

    # --- aggvm-noded ----------------------------------------------------
    def start_noded(self, i, key=None):
        netns, addr = self.hosts[i]
        logdir = self.work / f"host{i}-workers"
        logdir.mkdir(exist_ok=True)
        conf = self.work / f"host{i}-noded.conf"
        text = NODED_CONF.read_text()
        text = re.sub(r"(?m)^#?listen = .*$", f"listen = {addr}", text)
        text = re.sub(r"(?m)^secret = .*$", f"secret = {key or self.key}", text)
        text = re.sub(r"(?m)^qemu = .*$", f"qemu = {self.tools.qemu}", text)
        text = re.sub(r"(?m)^log-dir = .*$", f"log-dir = {logdir}", text)
        text = re.sub(r"(?m)^stop-timeout-ms = .*$", "stop-timeout-ms = 3000", text)
        conf.write_text(text)
        logf = open(self.work / f"host{i}-noded.log", "a")
        proc = subprocess.Popen([self.tools.harness, "exec", netns, "--", self.tools.noded, "--config", str(conf)],
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if "listening on" in self.noded_log(i):
                self.nodeds[i] = proc
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"aggvm-noded on host {i} did not start:\n{self.noded_log(i)[-2000:]}")

    def noded_log(self, i):
        p = self.work / f"host{i}-noded.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def wait_noded_log(self, i, text, timeout):
        """Whether host i's aggvm-noded logs `text` within `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and text not in self.noded_log(i):
            time.sleep(0.2)
        return text in self.noded_log(i)

    def kill_host(self, i):
        """Host i dies: every process in its namespace, SIGKILL."""
        pids = netns_pids(self.hosts[i][0])
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.nodeds.pop(i, None)
        return pids

    # --- domains --------------------------------------------------------
    def domain_xml(self, name, hosts, run="topology,atomics", hold=True, edit=None, kernel_args=()):
        """docs/examples/aggvm-guest.xml for this machine: `hosts` hosts,
        one NUMA cell of 2 vCPUs and 512 MiB each; kernel_args go on the
        guest's command line."""
        tree = ET.parse(EXAMPLE)
        dom = tree.getroot()
        dom.find("name").text = name
        dom.find("vcpu").text = str(2 * hosts)
        dom.find("memory").text = str(512 * hosts)
        os_el = dom.find("os")
        os_el.find("kernel").text = self.tools.kernel
        os_el.find("initrd").text = self.tools.initrd
        os_el.find("cmdline").text = " ".join(KERNEL_ARGS + [f"aggvm.run={run}"]
                                              + (["aggvm.hold=1"] if hold else []) + list(kernel_args))
        numa = dom.find("cpu/numa")
        for cell in list(numa):
            numa.remove(cell)
        for c in range(hosts):
            ET.SubElement(numa, "cell", id=str(c), cpus=f"{2 * c}-{2 * c + 1}", memory="512", unit="MiB")
        cluster = dom.find(f"metadata/{{{NS}}}cluster")
        cluster.set("timeout-ms", "3000")
        cluster.find(f"{{{NS}}}secret").set("file", str(self.key))
        for h in cluster.findall(f"{{{NS}}}host"):
            cluster.remove(h)
        for i in range(hosts):
            ET.SubElement(cluster, f"{{{NS}}}host", id=str(i), address=self.hosts[i][1], cells=str(i))
        devices = dom.find("devices")
        devices.find("emulator").text = self.tools.wrapper
        devices.find("serial/log").set("file", str(self.console_log(name)))
        disk = self.work / f"{name}-data.img"
        with open(disk, "wb") as f:
            f.truncate(64 << 20)
        devices.find("disk/source").set("file", str(disk))
        if edit:
            edit(dom, cluster)
        path = self.work / f"{name}.xml"
        ET.indent(tree, space="  ")
        tree.write(path)
        return path

    def console_log(self, name):
        return self.work / f"{name}-console.log"

    def define(self, name, hosts, **kw):
        path = self.domain_xml(name, hosts, **kw)
        self.virsh("define", str(path))
        self.domains.add(name)
        return path

    def wait_console(self, name, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.console_log(name)
            text = p.read_text(errors="replace") if p.exists() else ""
            if re.search(pattern, text):
                return text
            if self.domstate(name).startswith("shut off"):
                break
            time.sleep(0.3)
        p = self.console_log(name)
        return None if not p.exists() or not re.search(pattern, p.read_text(errors="replace")) \
            else p.read_text(errors="replace")

    def qemu_processes(self, name):
        """Every QEMU of domain `name` (its -name guest=) on this cluster's hosts."""
        out = []
        for netns, _ in self.hosts:
            for pid in netns_pids(netns):
                c = cmdline(pid)
                if "qemu-system" in c and f"guest={name}," in c:
                    out.append((pid, c[:120]))
        return out

    def wait_no_qemu(self, name, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.qemu_processes(name):
                return True
            time.sleep(0.1)
        return False

    def teardown(self):
        for name in sorted(self.domains):
            if not self.domstate(name).startswith("shut off"):
                self.virsh("destroy", name, check=False, quiet=True)
            self.virsh("undefine", name, check=False, quiet=True)
        if self.libvirtd and self.libvirtd.poll() is None:
            os.killpg(self.libvirtd.pid, signal.SIGTERM)
            try:
                self.libvirtd.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.libvirtd.pid, signal.SIGKILL)
        for proc in self.nodeds.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def results(console):
    """{'topology': {...}, 'atomics': {...}} from the guest's result lines."""
    out = {}
    for m in re.finditer(r"aggvm-(\w+): (.*status=\w+)", console or ""):
        out[m.group(1)] = dict(kv.split("=", 1) for kv in m.group(2).split() if "=" in kv)
    return out
