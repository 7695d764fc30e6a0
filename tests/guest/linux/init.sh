#!/bin/sh
# /init of aggvm's Linux test guest (busybox sh, PID 1).
#
# Runs the workloads named on the kernel command line and powers off, so QEMU
# (started with -no-reboot) exits once the result lines are on ttyS0.
#
#   aggvm.run=topology,clock,atomics,stream,omp   workloads, in order (default: all)
#   aggvm.atomics=ARGS                  arguments for aggvm-atomics, commas for spaces
#   aggvm.stream=ARGS                   arguments for aggvm-stream, commas for spaces
#   aggvm.shell=1                       drop to a shell instead of powering off
#   aggvm.hold=1                        after the workloads, wait for the ACPI power button
#   aggvm.blkwrite_cpu=N                blkwrite: the vCPU that writes /dev/vda (default: the last)
#   aggvm.net=URL,SHA256                net: the file to fetch over virtio-net and its digest
#   aggvm.net_cpu=N                     net: the vCPU that fetches it (default: the last)
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

run=topology,clock,atomics,stream,omp
atomics_args=
stream_args=
blkwrite_cpu=
net_spec=
net_cpu=
shell=0
hold=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    aggvm.run=*) run=${arg#aggvm.run=} ;;
    aggvm.atomics=*) atomics_args=$(echo "${arg#aggvm.atomics=}" | tr , ' ') ;;
    aggvm.stream=*) stream_args=$(echo "${arg#aggvm.stream=}" | tr , ' ') ;;
    aggvm.shell=1) shell=1 ;;
    aggvm.hold=1) hold=1 ;;
    aggvm.blkwrite_cpu=*) blkwrite_cpu=${arg#aggvm.blkwrite_cpu=} ;;
    aggvm.net=*) net_spec=${arg#aggvm.net=} ;;
    aggvm.net_cpu=*) net_cpu=${arg#aggvm.net_cpu=} ;;
    esac
done

# Linux's verdict on the TSC.  As it brings each vCPU up it checks that
# vCPU's TSC against the boot vCPU's (check_tsc_sync_source) and reports a
# warp, time going backwards between them; the check is skipped when the CPU
# model already makes the TSC suspect (e.g. non-Intel without invariant TSC).
clock_report() {
    cs=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)
    log=$(dmesg)
    if echo "$log" | grep -q "TSC warp\|check_tsc_sync_source failed"; then
        sync=warp
    elif echo "$log" | grep -q "TSCs unsynchronized"; then
        sync=unchecked
    else
        sync=ok
    fi
    unstable=no
    echo "$log" | grep -q "Marking TSC unstable\|Marking clocksource 'tsc' as unstable" && unstable=yes
    st=pass
    [ "$sync" = warp ] && st=fail
    echo "aggvm-clock: clocksource=$cs tsc_sync=$sync tsc_unstable=$unstable status=$st"
    [ "$st" = pass ]
}

# Whether the vCPUs' APICs held only interrupts that something sent: as it
# sets up each APIC, Linux reports a vector still pending from before
# ("Stale IRR").  On an aggregated guest a worker's own 8259 and I/O APIC,
# which the guest never programs, once sent vector 0 to vCPU 0 that way.
apic_report() {
    stale=$(dmesg | grep -c "APIC: Stale IRR")
    st=pass
    [ "$stale" -eq 0 ] || st=fail
    echo "aggvm-apic: stale_irr=$stale status=$st"
    [ "$st" = pass ]
}

# Loads kernel modules from /lib/modules in the order given.
load_modules() {
    for m in "$@"; do
        out=$(insmod /lib/modules/$m.ko 2>&1) || grep -q "^$m " /proc/modules || {
            echo "cannot load $m ($out)"; return 1; }
    done
}
VIRTIO_PCI="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci"

# A virtio-blk disk (/dev/vda), written by aggvm-blkwrite until the guest
# ends: the modules first, then the device node.
blkwrite() {
    out=$(load_modules $VIRTIO_PCI virtio_blk) || { echo "aggvm-blkwrite: $out status=fail"; return 1; }
    i=0
    while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -b /dev/vda ] || { echo "aggvm-blkwrite: no /dev/vda status=fail"; return 1; }
    cpu=${blkwrite_cpu:-$(($(grep -c ^processor /proc/cpuinfo) - 1))}
    /bin/aggvm-blkwrite /dev/vda "$cpu"
}

# A virtio-net NIC on QEMU's user networking (10.0.2.0/24, the host at
# 10.0.2.2): one vCPU (aggvm.net_cpu, default the last) fetches a file over
# HTTP and checks its SHA-256.  aggvm.net=URL,SHA256
net() {
    out=$(load_modules $VIRTIO_PCI failover net_failover virtio_net) || {
        echo "aggvm-net: $out status=fail"; return 1; }
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /sys/class/net/eth0 ] || { echo "aggvm-net: no eth0 status=fail"; return 1; }
    ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 &&
        ip route add default via 10.0.2.2 || { echo "aggvm-net: cannot configure eth0 status=fail"; return 1; }
    url=${net_spec%%,*} want=${net_spec#*,}
    cpu=${net_cpu:-$(($(grep -c ^processor /proc/cpuinfo) - 1))}
    mkdir -p /tmp
    read -r t0 _ </proc/uptime
    taskset -c "$cpu" wget -q -O /tmp/net.blob "$url" || { echo "aggvm-net: wget $url failed status=fail"; return 1; }
    read -r t1 _ </proc/uptime
    got=$(sha256sum /tmp/net.blob) got=${got%% *}
    bytes=$(wc -c </tmp/net.blob)
    rm -f /tmp/net.blob
    st=pass
    [ "$got" = "$want" ] || st=fail
    echo "aggvm-net: cpu=$cpu bytes=$bytes seconds=$(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}') sha256=$got expected=$want status=$st"
    [ $st = pass ]
}

read -r uptime _ </proc/uptime
echo "aggvm-guest: start uptime_s=$uptime kernel=$(uname -r) run=$run"
status=pass
for w in $(echo "$run" | tr , ' '); do
    case "$w" in
    topology) /bin/aggvm-topology || status=fail; apic_report || status=fail ;;
    clock) clock_report || status=fail ;;
    atomics) /bin/aggvm-atomics $atomics_args || status=fail ;;
    stream) /bin/aggvm-stream $stream_args || status=fail ;;
    omp) OMP_PROC_BIND=close OMP_PLACES=cores /bin/aggvm-omp || status=fail ;;
    blkwrite) blkwrite || status=fail ;;
    net) net || status=fail ;;
    *) echo "aggvm-guest: unknown workload '$w'"; status=fail ;;
    esac
done
read -r uptime _ </proc/uptime
echo "aggvm-guest: done uptime_s=$uptime status=$status"

# aggvm.hold=1: stay up until the ACPI power button (virsh shutdown, QMP
# system_powerdown), as a distribution's guest does.
hold_until_power_button() {
    insmod /lib/modules/button.ko 2>/dev/null
    insmod /lib/modules/evdev.ko 2>/dev/null
    dev=
    for d in /sys/class/input/event*; do
        [ "$(cat "$d/device/name" 2>/dev/null)" = "Power Button" ] && dev=/dev/input/${d##*/}
    done
    if [ -z "$dev" ] || [ ! -c "$dev" ]; then
        echo "aggvm-guest: no ACPI power button device; powering off now"
        return
    fi
    # Open the device before saying so: a press that comes right after the
    # line is then queued, not lost.
    exec 3<"$dev"
    echo "aggvm-guest: holding until the ACPI power button ($dev)"
    dd of=/dev/null bs=24 count=1 <&3 2>/dev/null
    exec 3<&-
    echo "aggvm-guest: power button pressed; powering off"
}
[ "$hold" = 1 ] && hold_until_power_button

if [ "$shell" = 1 ]; then
    exec setsid cttyhack sh
fi
# poweroff -f does not wait for the UART to send what the console still
# holds, so the last line could be lost (seen once after virsh migrate):
# stty applies its settings with TCSADRAIN, which waits until it is sent.
stty "$(stty -g)" 2>/dev/null
poweroff -f
# Only reached if ACPI power-off failed: a reboot also ends QEMU (-no-reboot).
reboot -f
