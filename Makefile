# aggvm: the targets a user types.  See README.md.
#
#   make demo      install what is missing, build, run the multi-host demo
#   make check     install what is missing, build, run every test
#   make bench     every benchmark
#   make check-dsm / check-guests / check-aggregation   one test suite
#   make bench-dsm                                      one benchmark

BUILD ?= build
MESON ?= meson
# Extra arguments for `meson test`, e.g. TESTARGS='--repeat 3'.
TESTARGS ?=

.PHONY: all deps setup build demo check check-dsm check-guests check-aggregation \
        bench bench-dsm clean distclean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD)

setup: deps $(BUILD)/build.ninja

build: setup
	@echo "== building (ninja -C $(BUILD)) =="
	@$(MESON) compile -C $(BUILD)

check: build
	@scripts/run-tests.sh $(BUILD) "" $(TESTARGS)

check-dsm: build
	@scripts/run-tests.sh $(BUILD) dsm $(TESTARGS)

check-guests: build
	@scripts/run-tests.sh $(BUILD) guests $(TESTARGS)

check-aggregation: build
	@scripts/run-tests.sh $(BUILD) aggregation $(TESTARGS)

bench: bench-dsm

bench-dsm: build
	@$(BUILD)/tests/dsm/dsm-bench $(BUILD)/tests/dsm/dsm-worker

demo: build
	@$(BUILD)/tests/dsm/dsm-demo $(BUILD)/tests/dsm/dsm-worker

clean:
	-$(MESON) compile -C $(BUILD) --clean

distclean:
	rm -rf $(BUILD)
