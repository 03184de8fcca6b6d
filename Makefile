# SPDX-License-Identifier: GPL-2.0
#
# miglock top-level targets. The two that matter (see README.md):
#   make demo    the end-to-end demo in QEMU
#   make test    every test: workspace, module lint, guest scenarios, KUnit
#
#   make test-fresh  both of them in a clean Debian 12 root (scripts/test-fresh.sh)
#
# Others: deps, kernel, module, clippy, rustfmt, tools, deb, fuzz, clean.

TOP      := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
KMAKE    := $(shell $(TOP)/scripts/toolchain.sh)
# The cached test kernel; any kernel build dir with Rust metadata works too.
KDIR     ?= $(shell $(TOP)/scripts/kernel.sh kdir)
CARGO    ?= cargo
HARNESS  := $(TOP)/tools/target/release/miglock-harness

.PHONY: all module clippy archcheck rustfmt rustfmtcheck deps kernel tools deb fuzz bench sim-report soak test-qemu72 demo test test-fresh clean

all: module

deps:
	@$(TOP)/scripts/deps.sh

kernel: deps
	@$(TOP)/scripts/kernel.sh build >/dev/null

# Builds rust/miglock.ko. V=1 for the full kbuild output.
module:
	@test -f $(KDIR)/rust/kernel.o || { \
		echo "module: no Rust-enabled kernel at KDIR=$(KDIR); run 'make kernel' or set KDIR" >&2; exit 1; }
	$(MAKE) -C $(KDIR) $(KMAKE) M=$(TOP) modules

# Lints the module with clippy as kbuild does (rust/Kbuild makes warnings errors).
clippy:
	$(MAKE) -C $(KDIR) $(KMAKE) M=$(TOP) CLIPPY=1 modules

# Proves that a kernel without CONFIG_X86_64 is refused before anything is
# compiled (the module drives x86 port I/O; see rust/Kconfig).
archcheck:
	@out=$$($(MAKE) -C $(KDIR) $(KMAKE) M=$(TOP) CONFIG_X86_64= modules 2>&1); \
	if echo "$$out" | grep -q 'miglock: needs CONFIG_X86_64=y'; then \
		echo "archcheck: a kernel without CONFIG_X86_64 is refused: ok"; \
	else \
		echo "$$out" | tail -n 5; \
		echo "archcheck: a kernel without CONFIG_X86_64 was not refused" >&2; exit 1; \
	fi

rustfmt:
	rustfmt --edition 2021 --config-path $(KDIR)/.rustfmt.toml rust/*.rs rust/compat/*.rs

rustfmtcheck:
	rustfmt --edition 2021 --config-path $(KDIR)/.rustfmt.toml --check rust/*.rs rust/compat/*.rs

# The build directories live in the cache (scripts/cargo-target.sh), so a
# fresh clone builds only its own crates.
tools:
	@$(TOP)/scripts/cargo-target.sh
	cd tools && $(CARGO) build --release --locked -p miglock-harness -p miglockd \
		-p miglock-tracer -p migsim -p miglock-cli -p xtask

# Debian packages into out/deb/ (miglockd, miglock-guest-tools, miglock-dkms)
# from the release binaries of 'make tools'; tests/packages.sh checks them.
deb: tools
	@$(TOP)/scripts/mkdeb.sh

# Runs every fuzz target for FUZZ_SECONDS each (cargo fuzz, nightly).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := wire_decode lock_request trace_read
fuzz: deps
	@$(TOP)/scripts/cargo-target.sh
	@mkdir -p out/fuzz
	@for t in $(FUZZ_TARGETS); do \
		log=$(TOP)/out/fuzz/$$t.log; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: $$log)"; \
		(cd tools/fuzz && cargo +nightly fuzz run $$t -- \
			-max_total_time=$(FUZZ_SECONDS)) >$$log 2>&1 || \
			{ echo "fuzz: $$t FAILED"; tail -n 30 $$log; exit 1; }; \
		tail -n 1 $$log; \
	done

# Benchmarks (figures, not pass/fail): lock round trip vs qemu-ga guest-ping,
# the planner vs QEMU's defaults, prefetch on/off, checkpoint-and-restore vs
# pre-copy and post-copy, tracer and simulator cost.
bench: kernel tools
	$(HARNESS) run bench-rtt bench-plan bench-prefetch bench-hints bench-checkpoint bench-tracer
	cd tools && cargo bench --locked -p miglockd --bench agent-scale
	$(TOP)/tools/target/release/miglock-tracer bench
	$(TOP)/tools/target/release/migsim bench

# Real migrations and live checkpoints of recorded workloads, then migsim's
# validation against them and its comparison of every scheme, written into
# Documentation/.
sim-report: kernel tools
	$(HARNESS) run bench-validate
	cd $(TOP) && tools/target/release/migsim validate --real out/validate \
		--splice Documentation/migsim.rst
	cd $(TOP) && tools/target/release/migsim report --traces out/validate \
		--splice Documentation/migsim.rst

# At least SOAK_MIGRATIONS live migrations (bounded by SOAK_BUDGET) of
# writing guests in every mode the planner may choose; every guest must
# arrive alive and whole. Results: out/soak/result.json. Not in 'make test'
# (which runs the short migrate-survival).
SOAK_MIGRATIONS ?= 100
SOAK_BUDGET     ?= 25m
soak: kernel tools
	$(HARNESS) soak --migrations $(SOAK_MIGRATIONS) --budget $(SOAK_BUDGET)

# Every guest scenario again on Debian 12's own QEMU (7.2), unpacked beside
# the system's: what Debian 12 users run. Not in 'make test' (it takes as
# long again). Where the agent fences pre-copy, scenarios migrate as an
# operator there must: in post-copy. Logs: out/qemu72/scenarios/.
test-qemu72: kernel tools
	q=$$($(TOP)/scripts/qemu.sh 7.2) && $(HARNESS) --qemu "$$q" --out $(TOP)/out/qemu72 run

demo: kernel tools
	$(HARNESS) demo

test: kernel tools
	$(TOP)/tests/run-all.sh

# The README's two commands, as typed, in a clean Debian 12 root (mmdebstrap
# minbase, the machine's rustup toolchain; nothing else): catches an install
# step that this machine's packages hide. out/fresh/result.json. About 30
# minutes with the test kernel cached (FRESH_KERNEL=cold builds it too).
test-fresh:
	@$(TOP)/scripts/test-fresh.sh

clean:
	-$(MAKE) -C $(KDIR) $(KMAKE) M=$(TOP) clean 2>/dev/null
	rm -rf out
