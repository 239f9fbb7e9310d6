# holdfast - userspace iSCSI target with hang-on-error.
#
#   make            build build/holdfastd and tools
#   make deps       install missing Debian packages (as root)
#   make run        build and serve the bundled targets.conf on port 3260
#   make test       build and run every test
#   make sanitize   run the tests under ASan + UBSan
#   make bench      holdfastd vs tgtd side by side, as ratios

CC      ?= gcc
BUILD   ?= build
SANFLAGS ?=
# One folder per layer (README "Architecture"); headers are included by
# their base name, and scripts/layers.sh checks that no layer includes a
# header of a layer above it.
LAYERS  := target/core backends target/lun target/hang target/scsi \
	   target/iscsi target/config target/mgmt
CFLAGS_BASE := -std=gnu11 -Wall -Wextra -Werror -O2 -g -D_GNU_SOURCE \
	       -pthread -MMD -MP $(addprefix -I,$(LAYERS))
CFLAGS  += $(CFLAGS_BASE) $(SANFLAGS)
LDFLAGS += -pthread $(SANFLAGS)
LIBS    := -luring -lconfig -lcrypto
FUSE_CFLAGS = $(shell pkg-config --cflags fuse3 2>/dev/null)
FUSE_LIBS   = $(shell pkg-config --libs fuse3 2>/dev/null)

# Debian packages the build, `make run` and the tests need.
DEB_BUILD := gcc make pkg-config liburing-dev libconfig-dev libssl-dev
DEB_TEST  := libiscsi-dev libiscsi-bin tgt qemu-utils qemu-block-extra \
	     python3 python3-pytest fuse3 libfuse3-dev socat iproute2 \
	     qemu-system-x86 linux-image-amd64 open-iscsi busybox-static \
	     e2fsprogs cpio kmod gzip strace multipath-tools
DEB_ALL   := $(DEB_BUILD) $(DEB_TEST)

SRC     := $(wildcard target/*.c $(addsuffix /*.c,$(LAYERS)))
OBJ     := $(patsubst %.c,$(BUILD)/obj/%.o,$(SRC))
LIBOBJ  := $(filter-out $(BUILD)/obj/target/main.o,$(OBJ))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRC))
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRC))

.PHONY: all deps run test unit pytest sanitize clean bench layers
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

test: deps all
	$(MAKE) --no-print-directory unit
	/usr/bin/python3 -m pytest -v -rs tests

# The whole suite with AddressSanitizer + UndefinedBehaviorSanitizer.
sanitize: deps
	$(MAKE) BUILD=build-san SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" all
	$(MAKE) --no-print-directory BUILD=build-san SANFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" unit
	HOLDFAST_BUILD=build-san ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  /usr/bin/python3 -m pytest -v -rs tests

# Side-by-side benchmark against tgtd (not a test; prints ratios).
bench: deps $(BUILD)/holdfastd
	HOLDFAST_BUILD=$(BUILD) scripts/bench.sh

clean:
	rm -rf build build-san

-include $(OBJ:.o=.d)

# holdfastadm: the management client (target/adm/*.c; not part of the daemon).
ADM_SRC := $(wildcard target/adm/*.c)
all: $(BUILD)/holdfastadm
$(BUILD)/holdfastadm: $(ADM_SRC) target/core/util.c target/core/util.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $(ADM_SRC) target/core/util.c $(LDFLAGS)
