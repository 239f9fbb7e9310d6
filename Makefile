# holdfast - userspace iSCSI target with hang-on-error.
#
#   make            build build/holdfastd and tools
#   make deps       install missing Debian packages (as root)
#   make run        build and serve the bundled targets.conf on port 3260
#   make test       build and run every test
#   make sanitize   run the whole suite under ASan + UBSan (make test runs
#                   the unit tests and a subset, SAN_SUBSET, that way)
#   make tsan       the threaded tests under ThreadSanitizer (in make test)
#   make fuzz       run each libFuzzer harness for FUZZ_SECONDS (default 60)
#   make soak       mixed I/O through qemu-io, iscsi-perf and raw sessions,
#                   with outages, LUN resets, session drops and management
#                   churn, for SOAK_SECONDS (default 600); RSS and fds must
#                   stay flat and every acknowledged byte is verified
#   make bench      holdfastd vs tgtd side by side, as ratios; then the
#                   cost of a dirty bitmap and a backup job's throughput,
#                   and the RBD case
#   make profile    instructions and syscalls per I/O (callgrind, perf)

CC      ?= gcc
BUILD   ?= build
# Parallel jobs for the builds `make test` does itself (four trees: plain,
# fuzz, ASan, TSan; serial they took ~5 of its minutes on 2 cores).
NPROC   := $(shell nproc 2>/dev/null || echo 2)
SANFLAGS ?=
# One folder per layer (README "Architecture"); headers are included by
# their base name, and scripts/layers.sh checks that no layer includes a
# header of a layer above it.
LAYERS  := target/core backends target/cbt target/lun target/hang target/scsi \
	   target/iscsi target/config target/mgmt
CFLAGS_BASE := -std=gnu11 -Wall -Wextra -Werror -O2 -g -D_GNU_SOURCE \
	       -pthread -MMD -MP $(addprefix -I,$(LAYERS))
CFLAGS  += $(CFLAGS_BASE) $(SANFLAGS)
LDFLAGS += -pthread $(SANFLAGS)
LIBS    := -luring -lconfig -lcrypto -liscsi -lrbd -lrados
FUSE_CFLAGS = $(shell pkg-config --cflags fuse3 2>/dev/null)
FUSE_LIBS   = $(shell pkg-config --libs fuse3 2>/dev/null)

# Debian packages the build, `make run` and the tests need.
DEB_BUILD := gcc make pkg-config liburing-dev libconfig-dev libssl-dev \
	     librbd-dev librados-dev
DEB_TEST  := libiscsi-dev libiscsi-bin tgt qemu-utils qemu-block-extra \
	     python3 python3-pytest fuse3 libfuse3-dev socat iproute2 \
	     qemu-system-x86 linux-image-amd64 open-iscsi busybox-static \
	     e2fsprogs cpio kmod gzip strace multipath-tools dmsetup \
	     systemd udev iperf3 valgrind linux-perf \
	     ceph-mon ceph-osd ceph-common tgt-rbd python3-rados python3-rbd
# Fuzzing (tests/fuzz): clang with libFuzzer and the sanitizer runtimes,
# llvm for llvm-symbolizer (readable stack traces).
DEB_FUZZ  := clang libclang-rt-14-dev llvm
DEB_ALL   := $(DEB_BUILD) $(DEB_TEST) $(DEB_FUZZ)

SRC     := $(wildcard target/*.c $(addsuffix /*.c,$(LAYERS)))
OBJ     := $(patsubst %.c,$(BUILD)/obj/%.o,$(SRC))
LIBOBJ  := $(filter-out $(BUILD)/obj/target/main.o,$(OBJ))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRC))
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRC))

.PHONY: soak all deps run test test-slow unit pytest sanitize tsan clean bench bench-rbd profile layers \
	sanitize-build sanitize-quick fuzz fuzz-build fuzz-smoke
all: $(BUILD)/layers.ok $(BUILD)/holdfastd $(UNIT_BIN) $(TOOL_BIN)

# The build fails when a lower layer includes a higher layer's header.
$(BUILD)/layers.ok: scripts/layers.sh $(wildcard target/*/*.[ch] target/*.c backends/*.[ch])
	@mkdir -p $(dir $@)
	scripts/layers.sh $(LAYERS) && touch $@
layers:
	scripts/layers.sh $(LAYERS)

$(BUILD)/holdfastd: $(OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/libholdfast.a: $(LIBOBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# Unit tests: one program per tests/unit/test_*.c, linked against the
# daemon's objects (main.o excluded).  A test may #include a .c file to
# reach its statics; the archive then supplies only what is still missing.
$(BUILD)/unit/%: tests/unit/%.c $(BUILD)/libholdfast.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libholdfast.a $(LIBS) $(LDFLAGS)

# Test tools: small libiscsi / libfuse3 programs used by the pytest suite.
# They are initiators, not the code under test: built without sanitizers
# even in `make sanitize` (libiscsi's own allocations would show as leaks).
$(BUILD)/tools/fusefail: tests/tools/fusefail.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(FUSE_CFLAGS) -o $@ $< $(FUSE_LIBS) -pthread
$(BUILD)/tools/%: tests/tools/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -o $@ $< -liscsi -pthread

deps:
	@missing=""; for p in $(DEB_ALL); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install:$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing </dev/null; \
	fi

run: deps all
	./scripts/run.sh

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

pytest: all
	/usr/bin/python3 -m pytest -v -rs tests

# Tests marked longrun (the whole iscsi-test-cu suite on an RBD LUN, ~5-12
# minutes) are left to `make test-slow`, to keep make test under 30 minutes
# on a 2-core machine.
test: deps
	$(MAKE) --no-print-directory -j$(NPROC) all
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory fuzz-smoke
	/usr/bin/python3 -m pytest -v -rs --durations=25 -m "not longrun and not soak" tests
	SOAK_SECONDS=60 /usr/bin/python3 -m pytest -v -s -rs -m soak tests/test_soak.py
	$(MAKE) --no-print-directory sanitize-quick
	$(MAKE) --no-print-directory tsan

test-slow: deps all
	/usr/bin/python3 -m pytest -v -rs -m longrun tests

# The soak (tests/test_soak.py, README "Soak"): `make test` runs 60 s of it.
SOAK_SECONDS ?= 600
soak: deps all
	SOAK_SECONDS=$(SOAK_SECONDS) /usr/bin/python3 -m pytest -v -s -rs \
	  -m soak tests/test_soak.py

# AddressSanitizer + UndefinedBehaviorSanitizer build (build-san/).
SAN_BUILD := build-san
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
	     -fno-sanitize-recover=all
SAN_ENV   := HOLDFAST_BUILD=$(SAN_BUILD) \
	     ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	     LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan-ceph.supp \
	     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The part of the pytest suite `make test` also runs sanitized (about 80 s
# here): the daemon's lifecycle, configuration and management
# (test_foundation), the iSCSI layer (test_iscsi_layer), its limits and
# slow peers (test_limits), and the hang
# engine's hold, retry, abort, reset, session-drop and ordering paths
# (test_hang, selected by -k).  `make sanitize` runs everything.
SAN_SUBSET   ?= tests/test_foundation.py tests/test_iscsi_layer.py \
		tests/test_limits.py tests/test_hang.py
SAN_SUBSET_K ?= not test_hang or \
		write_outage_shorter or read_hang or \
		queued_commands_time_out or abort_task_of_held or \
		abort_during_in_flight or lun_reset_drops or \
		dropped_session_leaves or logout_during_hang or \
		two_sessions_keep or hold_limit or preempt_and_abort or \
		session_reinstatement

sanitize-build: deps
	$(MAKE) -j$(NPROC) BUILD=$(SAN_BUILD) SANFLAGS="$(SAN_FLAGS)" all
	$(MAKE) --no-print-directory BUILD=$(SAN_BUILD) SANFLAGS="$(SAN_FLAGS)" unit

# The unit tests and SAN_SUBSET under the sanitizers (part of make test).
sanitize-quick: sanitize-build
	$(SAN_ENV) /usr/bin/python3 -m pytest -v -rs $(SAN_SUBSET) \
	  -k "$(SAN_SUBSET_K)"

# The whole suite with AddressSanitizer + UndefinedBehaviorSanitizer.
sanitize: sanitize-build
	$(SAN_ENV) /usr/bin/python3 -m pytest -v -rs tests

# ThreadSanitizer on what crosses threads: the hang engine's unit test
# (its last phase runs real reactor threads), the key table's (its grace
# period test runs a reactor thread), the block stack's (a reactor, a
# management thread changing the chain, the reaper) and the pytest files where
# management, SIGHUP and reactors share LUNs: concurrent settings updates
# under I/O, management, reload, the ALUA handover (its worker and
# watchdog threads), and the hang tests that change settings
# or run several sessions at once.  The conftest fails a test whose
# daemon log has a ThreadSanitizer report.  Adds about 4-5 minutes.
TSAN_FLAGS  := -fsanitize=thread -fno-omit-frame-pointer
TSAN_PYTEST := tests/test_settings_race.py tests/test_mgmt.py \
	       tests/test_reload.py tests/test_alua.py tests/test_hang.py \
	       tests/test_gateway.py
TSAN_HANG_K := runtime or two_ or other_lun or show_reports or \
	       hang_pause or retry_now or fail_now or write_outage or \
	       lun_reset or qemu_io
# the gateway's thread hop (holdfast as the SAN, on loopback)
TSAN_GW_K := another_reactor or busy-write
# The RBD backend (reactors, its worker, librbd's threads): the data path,
# fences after timed-out writes, the stale-lock probe.  librbd and
# libceph are not instrumented: tests/tsan-ceph.supp says why its
# suppressions hide nothing of ours.  (The two-gateway handover test is
# left out: under TSan's slowdown its OSD operations time out and fence,
# which changes what it checks.)
TSAN_RBD_K := roundtrip or hangclient or fence_timed_out or \
	      breaks_the_dead_lock or live_lock_holder
tsan: deps
	$(MAKE) -j$(NPROC) BUILD=build-tsan SANFLAGS="$(TSAN_FLAGS)" all
	set -e; for t in test_hang test_lun_keys test_stack test_reactor; do \
	  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build-tsan/unit/$$t; done
	HOLDFAST_BUILD=build-tsan TSAN_OPTIONS=second_deadlock_stack=1 \
	  /usr/bin/python3 -m pytest -q -rs $(TSAN_PYTEST) \
	  -k "(not test_hang.py and not test_gateway.py) or \
	      (test_hang.py and ($(TSAN_HANG_K))) or \
	      (test_gateway.py and ($(TSAN_GW_K)))"
	HOLDFAST_BUILD=build-tsan TSAN_OPTIONS="second_deadlock_stack=1 \
	  suppressions=$(CURDIR)/tests/tsan-ceph.supp" \
	  /usr/bin/python3 -m pytest -q -rs tests/test_rbd.py \
	  -m "not longrun" -k "$(TSAN_RBD_K)"

# Side-by-side benchmark against tgtd (not a test; prints ratios), with the
# machine's floors (iperf3, tools/tcpecho) and CPU per I/O; then the cost
# of a dirty bitmap and a backup job's throughput (scripts/bench_cbt.sh);
# a mirror job's copy throughput and write-blocking latency
# (scripts/bench_mirror.sh); then the RBD case: holdfast vs tgt-rbd vs
# librbd direct on a throw-away single-node Ceph cluster.
bench: deps $(BUILD)/holdfastd $(BUILD)/tools/tcpecho $(BUILD)/tools/iscsiqd1 \
		$(BUILD)/holdfastadm \
		$(BUILD)/tools/fusefail
	HOLDFAST_BUILD=$(BUILD) scripts/bench.sh
	HOLDFAST_BUILD=$(BUILD) scripts/bench_cbt.sh
	HOLDFAST_BUILD=$(BUILD) scripts/bench_mirror.sh
	HOLDFAST_BUILD=$(BUILD) scripts/bench-rbd.sh

bench-rbd: deps $(BUILD)/holdfastd $(BUILD)/holdfastadm
	HOLDFAST_BUILD=$(BUILD) scripts/bench-rbd.sh

# Instructions, syscalls and context switches per I/O (load-independent).
profile: $(BUILD)/holdfastd
	HOLDFAST_BUILD=$(BUILD) scripts/profile.sh

clean:
	rm -rf build build-san build-tsan $(FUZZ_BUILD)

-include $(OBJ:.o=.d) $(UNIT_BIN:=.d)

# holdfastadm: the management client (target/adm/*.c; not part of the daemon).
ADM_SRC := $(wildcard target/adm/*.c)
all: $(BUILD)/holdfastadm
$(BUILD)/holdfastadm: $(ADM_SRC) target/core/util.c target/core/util.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(ADM_SRC) target/core/util.c $(LDFLAGS)

# ---- fuzzing (README "Robustness") ----
# The daemon's objects compiled by clang with libFuzzer's coverage and
# ASan + UBSan, in their own build dir; one harness per tests/fuzz/fuzz_*.c
# (fuzz_env.c is the fixture they share).  A harness reads its seeds from
# tests/fuzz/corpus/NAME and replays tests/fuzz/regress/NAME (inputs that
# once crashed) before fuzzing.  A 16 MiB ASan quarantine (default 256)
# keeps freed buffers reusable: fresh pages for every connection's 64 KiB
# receive buffer made fuzz_conn five times slower.
FUZZ_BUILD   ?= build-fuzz
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=fuzzer-no-link,address,undefined \
		-fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(filter-out \
		tests/fuzz/fuzz_env.c,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_BIN     := $(patsubst %,$(FUZZ_BUILD)/fuzz/fuzz_%,$(FUZZ_NAMES))
FUZZ_ENV     := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=16 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp \
		ASAN_SYMBOLIZER_PATH=$$(command -v llvm-symbolizer)
FUZZ_OPTS    := -timeout=25 -rss_limit_mb=2048 -max_len=65536 \
		-print_final_stats=1

$(FUZZ_BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_env.c \
			   tests/fuzz/fuzz_env.h $(FUZZ_BUILD)/libholdfast.a
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -MMD -MP,$(CFLAGS)) -fsanitize=fuzzer -Itests/fuzz \
	  -o $@ $< tests/fuzz/fuzz_env.c $(FUZZ_BUILD)/libholdfast.a $(LIBS) \
	  $(LDFLAGS)

fuzz-build:
	$(MAKE) --no-print-directory -j$(NPROC) BUILD=$(FUZZ_BUILD) \
	  CC=$(FUZZ_CC) SANFLAGS="$(FUZZ_SAN)" $(FUZZ_BIN)

# Each harness for FUZZ_SECONDS from its seeds; new coverage goes to
# $(FUZZ_BUILD)/corpus/NAME, a crash to $(FUZZ_BUILD)/crash-NAME-*.
fuzz: fuzz-build
	@set -e; for n in $(FUZZ_NAMES); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$n tests/fuzz/regress/$$n; \
	  echo "== fuzz_$$n: $(FUZZ_SECONDS) s"; \
	  $(FUZZ_ENV) $(FUZZ_BUILD)/fuzz/fuzz_$$n $(FUZZ_OPTS) \
	    -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=$(FUZZ_BUILD)/crash-$$n- \
	    $(FUZZ_BUILD)/corpus/$$n tests/fuzz/corpus/$$n tests/fuzz/regress/$$n; \
	done

# make test: replay every seed and regression input once, then fuzz each
# harness for FUZZ_SMOKE_SECONDS; any crash fails.
fuzz-smoke: fuzz-build
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for n in $(FUZZ_NAMES); do \
	  bin=$(FUZZ_BUILD)/fuzz/fuzz_$$n; mkdir -p "$$tmp/$$n"; \
	  inputs=$$(find tests/fuzz/corpus/$$n tests/fuzz/regress/$$n -type f 2>/dev/null || true); \
	  echo "== fuzz_$$n: replay $$(echo $$inputs | wc -w) inputs, fuzz $(FUZZ_SMOKE_SECONDS) s"; \
	  if [ -n "$$inputs" ] && ! $(FUZZ_ENV) $$bin $(FUZZ_OPTS) $$inputs \
	       >"$$tmp/log" 2>&1; then tail -n 60 "$$tmp/log"; exit 1; fi; \
	  if ! $(FUZZ_ENV) $$bin $(FUZZ_OPTS) \
	       -max_total_time=$(FUZZ_SMOKE_SECONDS) \
	       -artifact_prefix=$(FUZZ_BUILD)/crash-$$n- \
	       "$$tmp/$$n" tests/fuzz/corpus/$$n >"$$tmp/log" 2>&1; then \
	    tail -n 60 "$$tmp/log"; exit 1; fi; \
	  grep -h '^stat::number_of_executed_units' "$$tmp/log" || true; \
	done
