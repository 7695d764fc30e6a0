# aggvm: the targets a user types.  See README.md.
#
#   make demo      install what is missing, build, run the multi-host demo (through virsh)
#   make check     install what is missing, build, run every test
#   make bench     every benchmark
#   make check-dsm / check-guests / check-aggregation / check-migration / check-checkpoint / check-scheduler / check-libvirt   one suite
#   make bench-dsm / bench-guest / bench-migration / bench-checkpoint / bench-scheduler   one benchmark
#   make qemu      the patched QEMU alone (build/qemu-patches/qemu-system-x86_64)
#   make disk-guest  the Debian disk guest (build/tests/guest/linux/debian.qcow2, as root)
#   make check-series  build the tree after each patch in turn (each must build)

BUILD ?= build
MESON ?= meson
# make check-series FROM=N starts at patch N.
FROM ?= 1
# Extra arguments for `meson test`, e.g. TESTARGS='--repeat 3'.
TESTARGS ?=

.PHONY: all deps setup build qemu disk-guest demo check check-dsm check-guests check-aggregation check-migration check-checkpoint check-scheduler check-libvirt \
        demo-aggregation bench bench-dsm bench-guest bench-migration bench-checkpoint bench-scheduler demo-dsm check-series clean distclean

QEMU_BIN = $(BUILD)/qemu-patches/qemu-system-x86_64
HARNESS_BIN = $(BUILD)/tests/harness/aggvm-harness
TESTOS_BIN = $(BUILD)/tests/guest/testos/testos
LINUX_KERNEL = $(BUILD)/tests/guest/linux/vmlinuz
LINUX_INITRD = $(BUILD)/tests/guest/linux/initramfs.cpio.gz
DISK_DIR = $(BUILD)/tests/guest/linux

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD)

setup: deps $(BUILD)/build.ninja

build: setup
	@echo "== building (ninja -C $(BUILD)) =="
	@$(MESON) compile -C $(BUILD)

check: qemu disk-guest
	@scripts/run-tests.sh $(BUILD) "" $(TESTARGS)

check-dsm: build
	@scripts/run-tests.sh $(BUILD) dsm $(TESTARGS)

check-guests: build
	@scripts/run-tests.sh $(BUILD) guests $(TESTARGS)

check-aggregation: qemu disk-guest
	@scripts/run-tests.sh $(BUILD) aggregation $(TESTARGS)

check-migration: qemu
	@scripts/run-tests.sh $(BUILD) migration $(TESTARGS)

check-checkpoint: qemu
	@scripts/run-tests.sh $(BUILD) checkpoint $(TESTARGS)

check-scheduler: qemu
	@scripts/run-tests.sh $(BUILD) scheduler $(TESTARGS)

check-libvirt: qemu
	@scripts/run-tests.sh $(BUILD) libvirt $(TESTARGS)

# QEMU 10.0.2 with qemu-patches/ (first build: 15-25 minutes on 2 cores).
qemu: build
	@echo "== building the patched QEMU (qemu-patches/build-qemu.py) =="
	@$(MESON) compile -C $(BUILD) qemu-system-x86_64

# Debian bookworm from the package archive as a qcow2 root file system, with
# its kernel and initramfs (tests/guest/linux/build_disk.py; about a minute).
disk-guest: build
	@echo "== building the Debian disk guest (mmdebstrap, mkfs.ext4, qemu-img) =="
	@$(MESON) compile -C $(BUILD) linux-disk-guest

# Each patch of the series builds on its own (incremental: minutes per patch).
check-series: build
	@python3 qemu-patches/build-qemu.py --build-dir build-qemu \
	    --dsm-pkgconfig $(CURDIR)/$(BUILD)/meson-uninstalled --check-series --from $(FROM)

bench: bench-dsm bench-guest bench-migration bench-checkpoint bench-scheduler

bench-guest: qemu disk-guest
	@python3 tests/aggregation/bench_guest.py --qemu $(QEMU_BIN) --harness $(HARNESS_BIN) \
	    --testos $(TESTOS_BIN) --linux-kernel $(LINUX_KERNEL) --linux-initrd $(LINUX_INITRD) \
	    --disk-image $(DISK_DIR)/debian.qcow2 --disk-kernel $(DISK_DIR)/debian-vmlinuz \
	    --disk-initrd $(DISK_DIR)/debian-initrd.img --ucx-floor $(BUILD)/tests/dsm/dsm-ucx-floor

bench-migration: qemu
	@python3 tests/migration/bench_migration.py --qemu $(QEMU_BIN) --harness $(HARNESS_BIN) \
	    --testos $(TESTOS_BIN) --ucx-floor $(BUILD)/tests/dsm/dsm-ucx-floor

# Checkpoint and restore of a guest spread over 2 hosts against one stock
# QEMU, and the downtime of a live migration of the whole guest.
bench-checkpoint: qemu
	@python3 tests/checkpoint/bench_checkpoint.py --qemu $(QEMU_BIN) --harness $(HARNESS_BIN) \
	    --testos $(TESTOS_BIN)

bench-scheduler: qemu
	@python3 tests/scheduler/bench_scheduler.py --qemu $(QEMU_BIN) --harness $(HARNESS_BIN) \
	    --testos $(TESTOS_BIN)

bench-dsm: build
	@$(BUILD)/tests/dsm/dsm-bench $(BUILD)/tests/dsm/dsm-worker

# The user's workflow: virsh define/start of docs/examples/aggvm-guest.xml over
# two hosts (network namespaces), aggvmctl status, virsh destroy.
demo: qemu
	@python3 tests/libvirt/demo.py --qemu $(QEMU_BIN) --harness $(HARNESS_BIN) \
	    --wrapper $(BUILD)/libvirt-driver/aggvm-qemu --noded $(BUILD)/libvirt-driver/aggvm-noded \
	    --aggvmctl $(BUILD)/libvirt-driver/aggvmctl --kernel $(LINUX_KERNEL) --initrd $(LINUX_INITRD)

# The same guest without libvirt, then the test guest under KVM (the previous demo).
demo-aggregation: qemu
	@python3 tests/aggregation/demo.py --qemu $(QEMU_BIN) --harness $(HARNESS_BIN) \
	    --testos $(TESTOS_BIN) --linux-kernel $(LINUX_KERNEL) --linux-initrd $(LINUX_INITRD)

demo-dsm: build
	@$(BUILD)/tests/dsm/dsm-demo $(BUILD)/tests/dsm/dsm-worker

clean:
	-$(MESON) compile -C $(BUILD) --clean

distclean:
	rm -rf $(BUILD) build-qemu
