#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Build QEMU 10.0.2 with the aggvm patch series, reproducibly and incrementally.

Stages (one progress line each):
  fetch      the Debian orig tarball into the cache (only if absent), sha256-pinned
  extract    into BUILD/src, once, as a git tree whose first commit is the tarball
  patch      reset BUILD/src to the tarball and `git am` the series, only when the
             series changed; files whose content ends up identical keep their
             mtime, so ninja rebuilds only what the changed patches touch
  configure  BUILD/obj, only when the configure arguments changed
  build      ninja in BUILD/obj; BUILD/qemu-system-x86_64 links to the binary

Developer loop: edit and `git commit` inside BUILD/src, then `--export` writes the
commits on top of the tarball back to qemu-patches/ as 000N-*.patch and `series`.
"""

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

QEMU_VERSION = "10.0.2"
TARBALL = "qemu_10.0.2+ds.orig.tar.xz"
TARBALL_SHA256 = "0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1"
TARBALL_TOPDIR = "qemu-10.0.2"
APT_SOURCE = ["apt-get", "source", "--download-only", "-t", "bookworm-backports", "qemu"]
DEFAULT_CACHE = "/var/cache/aggvm/qemu"
BASE_TAG = "aggvm-orig"
COVER_LETTER = "0000-cover-letter.patch"
# Fixed identity and date for the tree's commits: the same inputs give the same tree.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "aggvm build", "GIT_AUTHOR_EMAIL": "build@aggvm.invalid",
    "GIT_COMMITTER_NAME": "aggvm build", "GIT_COMMITTER_EMAIL": "build@aggvm.invalid",
    "GIT_AUTHOR_DATE": "2025-07-01T00:00:00Z", "GIT_COMMITTER_DATE": "2025-07-01T00:00:00Z",
}
LOCK_TIMEOUT_S = 3 * 3600

FIRMWARE_PATH = "/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu"
# Minimal feature set: x86_64 system emulation with KVM and TCG, no UI, no
# network back ends but slirp (user networking), no tools; pixman because
# the pc machine's VGA needs it.
CONFIGURE_ARGS = [
    "--disable-download",
    "--target-list=x86_64-softmmu",
    "--without-default-features",
    "--enable-kvm",
    "--enable-tcg",
    "--enable-pixman",
    # User-mode networking (<interface type='user'>, -netdev user) for guests
    # that need a network without a bridge on the host.
    "--enable-slirp",
    "--enable-trace-backends=log",
    "--disable-docs",
    # No --disable-werror: the source tree is a git tree, for which QEMU turns
    # -Werror on (configure writes it to config-meson.cross, and meson's
    # regeneration re-applies it over a --disable-werror).  The patches must
    # build warning-free, as upstream requires.
    "--disable-install-blobs",
    "--firmwarepath=" + FIRMWARE_PATH,
]
BINARY = "qemu-system-x86_64"


class BuildError(Exception):
    pass


def stage(name, msg):
    print(f"== {name}: {msg}", flush=True)


def run(cmd, cwd=None, env=None, capture=False):
    full_env = dict(os.environ, **(env or {}))
    res = subprocess.run(cmd, cwd=cwd, env=full_env, text=True,
                         stdout=subprocess.PIPE if capture else None,
                         stderr=subprocess.STDOUT if capture else None)
    if res.returncode != 0:
        out = f"\n{res.stdout}" if capture and res.stdout else ""
        raise BuildError(f"command failed (exit {res.returncode}): {' '.join(map(str, cmd))}{out}")
    return res.stdout if capture else None


def git(src, *args, capture=True):
    # safe.directory: the tree may be owned by another user than the builder.
    return run(["git", "-c", "safe.directory=*", "-c", "core.autocrlf=false", *args],
               cwd=src, env=GIT_ENV, capture=capture)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- fetch ------------------------------------------------------------------

def fetch(cache):
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / TARBALL
    if tarball.exists():
        stage("fetch", f"using cached {tarball}")
    else:
        stage("fetch", f"apt-get source qemu (bookworm-backports) into {cache}")
        # The archive may 404 the .dsc and debian.tar.xz while serving the orig
        # tarball: apt then exits non-zero, so judge by the tarball alone.
        res = subprocess.run(APT_SOURCE, cwd=cache, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if not tarball.exists():
            raise BuildError(f"apt-get source did not produce {tarball} (exit {res.returncode}):\n"
                             f"{res.stdout}\nIs bookworm-backports with deb-src in apt's sources?"
                             " (scripts/install-deps.sh adds it)")
    digest = sha256_file(tarball)
    if digest != TARBALL_SHA256:
        raise BuildError(f"sha256 mismatch for {tarball}:\n  expected {TARBALL_SHA256}\n"
                         f"  got      {digest}\nRefusing to build from it; delete the file to "
                         "fetch it again.")
    stage("fetch", f"sha256 verified {digest}")
    return tarball


# ---- extract ----------------------------------------------------------------

def extract(tarball, src):
    if (src / ".git").is_dir() and (src / ".aggvm-tarball").exists() \
            and (src / ".aggvm-tarball").read_text().strip() == TARBALL_SHA256:
        stage("extract", f"source tree present: {src}")
        return
    stage("extract", f"{tarball.name} -> {src}")
    tmp = src.with_name(src.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tarball) as tf:
        members = [m for m in tf.getmembers()
                   if m.name == TARBALL_TOPDIR or m.name.startswith(TARBALL_TOPDIR + "/")]
        if hasattr(tarfile, "data_filter"):
            tf.extractall(tmp, members=members, filter="data")
        else:  # Python < 3.11.4: no filters; never keep the archive's owners
            for m in members:
                m.uid = m.gid = os.getuid()
                m.uname = m.gname = ""
            tf.extractall(tmp, members=members)
    tree = tmp / TARBALL_TOPDIR
    git(tree, "init", "-q")
    git(tree, "add", "-Af", ".")
    git(tree, "commit", "-q", "--no-gpg-sign", "-m", f"QEMU {QEMU_VERSION} ({TARBALL})")
    git(tree, "tag", BASE_TAG)
    # Outside the repository's tracked files: excluded in .git/info/exclude.
    (tree / ".aggvm-tarball").write_text(TARBALL_SHA256 + "\n")
    with open(tree / ".git" / "info" / "exclude", "a") as f:
        f.write("/.aggvm-tarball\n/.aggvm-series\n")
    shutil.rmtree(src, ignore_errors=True)
    tree.rename(src)
    shutil.rmtree(tmp)


# ---- patch ------------------------------------------------------------------

def read_series(patch_dir):
    series = patch_dir / "series"
    names = []
    for line in series.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    for n in names:
        if not (patch_dir / n).is_file():
            raise BuildError(f"{series} names {n}, which does not exist")
    return names


def series_digest(patch_dir, names):
    h = hashlib.sha256()
    for n in names:
        h.update(n.encode() + b"\0")
        h.update((patch_dir / n).read_bytes())
    return h.hexdigest()


def changed_files(src):
    out = git(src, "diff", "--name-only", "-z", BASE_TAG)
    return [p for p in out.split("\0") if p]


def snapshot(src, paths):
    snap = {}
    for p in paths:
        f = src / p
        if f.is_file():
            st = f.stat()
            snap[p] = (hashlib.sha1(f.read_bytes()).hexdigest(), st.st_atime_ns, st.st_mtime_ns)
    return snap


def apply_series(src, patch_dir, discard, names=None):
    names = read_series(patch_dir) if names is None else names
    digest = series_digest(patch_dir, names)
    stamp = src / ".aggvm-series"
    head = git(src, "rev-parse", "HEAD").strip()
    state = json.loads(stamp.read_text()) if stamp.exists() else None
    dirty = git(src, "status", "--porcelain").strip()

    if not discard:
        if dirty:
            raise BuildError(f"{src} has uncommitted changes:\n{dirty}\nCommit them and run "
                             "--export to turn them into patches, or pass --discard.")
        if state and state["head"] != head:
            raise BuildError(f"{src} has commits that are not in the series (HEAD {head[:12]}); "
                             "run --export to write them to qemu-patches/, or pass --discard.")
    if state and state["series"] == digest and state["head"] == head and not dirty:
        stage("patch", f"series unchanged ({len(names)} patches applied)")
        return

    before = snapshot(src, changed_files(src))
    git(src, "am", "--abort", capture=True) if (src / ".git" / "rebase-apply").exists() else None
    git(src, "reset", "-q", "--hard", BASE_TAG)
    git(src, "clean", "-q", "-fdx", "-e", "/.aggvm-tarball")
    stamp.unlink(missing_ok=True)
    for i, n in enumerate(names, 1):
        stage("patch", f"[{i}/{len(names)}] {n}")
        try:
            git(src, "am", "-q", "--no-gpg-sign", "--committer-date-is-author-date",
                str(patch_dir / n))
        except BuildError as e:
            subprocess.run(["git", "-c", "safe.directory=*", "am", "--abort"], cwd=src,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            raise BuildError(f"patch {n} does not apply on top of the ones before it:\n{e}")
    kept = 0
    for p, (sha, atime, mtime) in before.items():
        f = src / p
        if f.is_file() and hashlib.sha1(f.read_bytes()).hexdigest() == sha:
            os.utime(f, ns=(atime, mtime))
            kept += 1
    head = git(src, "rev-parse", "HEAD").strip()
    stamp.write_text(json.dumps({"series": digest, "head": head}) + "\n")
    stage("patch", f"applied {len(names)} patches; {kept} unchanged files keep their mtime")


def export_series(src, patch_dir):
    commits = git(src, "rev-list", "--reverse", f"{BASE_TAG}..HEAD").split()
    if not commits:
        raise BuildError(f"no commits on top of {BASE_TAG} in {src}")
    if git(src, "status", "--porcelain", "--untracked-files=no").strip():
        raise BuildError(f"{src} has uncommitted changes: commit them first")
    # The cover letter (0000-cover-letter.patch) is written by hand.
    for old in patch_dir.glob("[0-9][0-9][0-9][0-9]-*.patch"):
        if old.name != COVER_LETTER:
            old.unlink()
    out = git(src, "format-patch", "-q", "--no-signature", "--zero-commit", "--no-numbered",
              "-o", str(patch_dir), BASE_TAG + "..HEAD")
    names = sorted(p.name for p in patch_dir.glob("[0-9][0-9][0-9][0-9]-*.patch")
                   if p.name != COVER_LETTER)
    (patch_dir / "series").write_text(
        "# Applied in order by build-qemu.py on top of the QEMU 10.0.2 tarball.\n"
        + "".join(n + "\n" for n in names))
    stamp = src / ".aggvm-series"
    stamp.write_text(json.dumps({"series": series_digest(patch_dir, names),
                                 "head": git(src, "rev-parse", "HEAD").strip()}) + "\n")
    stage("export", f"wrote {len(names)} patches and series to {patch_dir}")
    del out


# ---- configure and build -----------------------------------------------------

def configure(src, obj, python, pkg_config_path):
    args = [str(src / "configure"), f"--python={python}", *CONFIGURE_ARGS]
    env = {}
    if pkg_config_path:
        env["PKG_CONFIG_PATH"] = pkg_config_path
    # A new include directory or library in libaggvm-dsm's pkg-config file
    # must reach QEMU's build too: configure caches what pkg-config said.
    pc_files = sorted(Path(pkg_config_path).glob("aggvm-dsm*.pc")) if pkg_config_path else []
    wanted = {"args": args, "env": env,
              "dsm_pc": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in pc_files}}
    stamp = obj / ".aggvm-configure"
    if (obj / "build.ninja").exists() and stamp.exists() \
            and json.loads(stamp.read_text()) == wanted:
        stage("configure", f"up to date: {obj}")
        return env
    stage("configure", " ".join(args[1:]))
    obj.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    log = obj / "aggvm-configure.log"
    with open(log, "w") as f:
        res = subprocess.run(["nice", "-n", "10", *args], cwd=obj, env=dict(os.environ, **env),
                             stdout=f, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise BuildError(f"configure failed (exit {res.returncode}), log {log}:\n{tail}")
    stamp.write_text(json.dumps(wanted) + "\n")
    return env


def build(obj, jobs, env):
    stage("build", f"ninja -C {obj} -j{jobs} {BINARY}")
    start = time.monotonic()
    run(["nice", "-n", "10", "ninja", "-C", str(obj), f"-j{jobs}", BINARY], env=env)
    stage("build", f"done in {time.monotonic() - start:.0f} s")
    return obj / BINARY


def check_series(src, obj, patch_dir, jobs, env, first=1):
    """Builds the tree after each patch in turn: each must build on its own.

    Incremental (one object tree), so a patch costs what it touches; from
    patch `first` on (the ones before are taken as checked).  Leaves the
    whole series applied and built.
    """
    names = read_series(patch_dir)
    failed = []
    for k in range(max(first, 1), len(names) + 1):
        stage("check", f"[{k}/{len(names)}] {names[k - 1]}")
        apply_series(src, patch_dir, discard=True, names=names[:k])
        try:
            build(obj, jobs, env)
        except BuildError as e:
            failed.append(names[k - 1])
            print(f"build-qemu: {names[k - 1]} does not build on its own:\n{e}",
                  file=sys.stderr)
    apply_series(src, patch_dir, discard=True)
    build(obj, jobs, env)
    checked = len(names) - max(first, 1) + 1
    stage("check", f"{checked - len(failed)} of {checked} patches build on their own "
          f"(patches {max(first, 1)}-{len(names)})")
    if failed:
        raise BuildError("patches that do not build on their own: " + ", ".join(failed))


def link_firmware(obj):
    """Makes the firmware directories visible to the binary run from obj/.

    A binary next to a qemu-bundle/ directory (the build tree) looks for its
    data, firmware included, only under qemu-bundle/<path>: link each
    --firmwarepath directory there.  Copies elsewhere use the paths as given.
    """
    for d in FIRMWARE_PATH.split(":"):
        link = obj / "qemu-bundle" / d.lstrip("/")
        if not os.path.lexists(link):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(d)


def publish(binary, build_dir, output):
    link = build_dir / BINARY
    tmp = link.with_name(BINARY + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(binary.relative_to(build_dir))
    tmp.replace(link)
    if output:
        output = Path(output).absolute()
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        tmp.unlink(missing_ok=True)
        shutil.copy2(binary, tmp)
        tmp.replace(output)
        return output
    return link


def main():
    here = Path(__file__).resolve().parent
    repo = here.parent
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.environ.get("AGGVM_QEMU_BUILD",
                                                          str(repo / "build-qemu")),
                    help="holds src/ and obj/ (default: $AGGVM_QEMU_BUILD or <repo>/build-qemu)")
    ap.add_argument("--cache", default=os.environ.get("AGGVM_CACHE", DEFAULT_CACHE),
                    help="tarball cache (default: $AGGVM_CACHE or %(default)s)")
    ap.add_argument("--patches", default=str(here), help="directory with series and patches")
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="Python for configure; must import meson >= 1.5 and pycotap")
    ap.add_argument("--dsm-pkgconfig", default=os.environ.get("AGGVM_DSM_PKGCONFIG", ""),
                    help="PKG_CONFIG_PATH where aggvm-dsm.pc is found (meson-uninstalled dir)")
    ap.add_argument("--output", help="also copy the binary here (meson's custom_target output)")
    ap.add_argument("--discard", action="store_true",
                    help="drop uncommitted or unexported changes in src/ and re-apply the series")
    ap.add_argument("--export", action="store_true",
                    help="write the commits in src/ on top of the tarball to the patch directory")
    ap.add_argument("--no-build", action="store_true", help="stop after configure")
    ap.add_argument("--check-series", action="store_true",
                    help="build after each patch in turn (each must build on its own)")
    ap.add_argument("--from", dest="first", type=int, default=1, metavar="N",
                    help="--check-series: start at patch N")
    a = ap.parse_args()

    build_dir = Path(a.build_dir).absolute()
    patch_dir = Path(a.patches).absolute()
    src, obj = build_dir / "src", build_dir / "obj"
    build_dir.mkdir(parents=True, exist_ok=True)

    # One build per build directory at a time; bounded wait.
    with open(build_dir / ".lock", "w") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        announced = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BuildError(f"another build holds {build_dir}/.lock for too long")
                if not announced:
                    stage("lock", f"waiting for another build in {build_dir}")
                    announced = True
                time.sleep(2)
        if a.export:
            export_series(src, patch_dir)
            return 0
        tarball = fetch(Path(a.cache))
        extract(tarball, src)
        apply_series(src, patch_dir, a.discard)
        env = configure(src, obj, a.python, a.dsm_pkgconfig)
        if a.no_build:
            return 0
        if a.check_series:
            if git(src, "status", "--porcelain", "--untracked-files=no").strip():
                raise BuildError(f"{src} has uncommitted changes: export or discard them first")
            check_series(src, obj, patch_dir, a.jobs, env, a.first)
        binary = build(obj, a.jobs, env)
        link_firmware(obj)
        out = publish(binary, build_dir, a.output)
        print(out, flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as e:
        print(f"build-qemu: error: {e}", file=sys.stderr)
        sys.exit(1)
