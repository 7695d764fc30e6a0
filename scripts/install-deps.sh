#!/usr/bin/env bash
# Installs what aggvm needs from Debian's archive, and nothing already there.
#
# bookworm-backports (for meson >= 1.5, which QEMU 10 needs) and deb-src (for
# QEMU's source) are derived from the machine's existing Debian entry, so no
# archive host name is written into the project.
set -euo pipefail

log() { printf '[deps] %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

debian_sources=/etc/apt/sources.list.d/debian.sources
aggvm_sources=/etc/apt/sources.list.d/aggvm-backports.sources

# Field of the first deb822 stanza whose Suites mention plain "bookworm".
stanza_field() {
    awk -v want="$1" '
        BEGIN { RS=""; FS="\n" }
        /Suites:[^\n]*bookworm([ \n]|$)/ {
            for (i = 1; i <= NF; i++)
                if ($i ~ "^" want ":") { sub("^" want ":[ ]*", "", $i); print $i; exit }
        }' "$debian_sources"
}

add_backports() {
    [ -f "$aggvm_sources" ] && return 0
    if [ ! -f "$debian_sources" ]; then
        log "error: $debian_sources not found; cannot derive bookworm-backports" >&2
        exit 1
    fi
    local uris signed
    uris=$(stanza_field URIs)
    signed=$(stanza_field Signed-By)
    if [ -z "$uris" ]; then
        log "error: no bookworm entry with URIs: in $debian_sources" >&2
        exit 1
    fi
    log "adding bookworm-backports and deb-src from $debian_sources"
    $SUDO tee "$aggvm_sources" >/dev/null <<SRC
Types: deb deb-src
URIs: $uris
Suites: bookworm-backports
Components: main
Signed-By: $signed

Types: deb-src
URIs: $uris
Suites: bookworm
Components: main
Signed-By: $signed
SRC
    NEED_UPDATE=1
}

# Packages from bookworm itself.
PKGS=(
    build-essential pkg-config git ninja-build python3 python3-venv
    libgtest-dev libgmock-dev libbenchmark-dev
    libprotobuf-dev protobuf-compiler
    libucx-dev ucx-utils
    libssl-dev libfmt-dev libspdlog-dev libcli11-dev
    iproute2 nftables procps psmisc
    busybox-static cpio xz-utils nasm
    libglib2.0-dev libpixman-1-dev libslirp-dev zlib1g-dev libfdt-dev
    libcap-ng-dev libattr1-dev python3-pycotap bison flex
    seabios ipxe-qemu qemu-system-data qemu-system-x86 dpkg-dev
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
    libxml2-dev nlohmann-json3-dev
    mmdebstrap qemu-utils e2fsprogs
)
# Packages taken from bookworm-backports.
BACKPORTS=(meson)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
meson_ok=0
if command -v meson >/dev/null && dpkg --compare-versions "$(meson --version)" ge 1.5; then
    meson_ok=1
fi

# libvirt's QEMU driver refuses to start unless its compiled-in user
# exists; libvirt-daemon-system would create it (with systemd units this
# project does not need: the tests start their own libvirtd).
ensure_libvirt_user() {
    getent group libvirt-qemu >/dev/null || $SUDO groupadd --system libvirt-qemu
    getent passwd libvirt-qemu >/dev/null ||
        $SUDO useradd --system --no-create-home --home-dir /var/lib/libvirt \
            --shell /usr/sbin/nologin -g libvirt-qemu libvirt-qemu
}

NEED_UPDATE=0
add_backports
if [ ${#missing[@]} -eq 0 ] && [ $meson_ok -eq 1 ] && [ $NEED_UPDATE -eq 0 ]; then
    ensure_libvirt_user
    log "all dependencies present"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
$SUDO apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ $meson_ok -eq 0 ]; then
    log "installing from bookworm-backports: ${BACKPORTS[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports "${BACKPORTS[@]}" >/dev/null
fi
ensure_libvirt_user
log "done"
