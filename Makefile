# npred build. `make` builds libnpred (static + shared) and the npred binary;
# `make test` builds and runs every test; `make sanitize` runs them under
# ASan/UBSan; `make bench` runs the benchmarks; `make demo` runs the main job.
# MPI support (multi-process `mpirun npred train`) is on when mpicc is found.
# Sources are found by wildcard: add a .c file and it is built.

CC      ?= gcc
BUILD   ?= build
OPT     ?= -O3 -march=native
BLASINC ?= /usr/include/x86_64-linux-gnu/openblas-openmp
BLASLIB ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -fvisibility=hidden -fopenmp -g $(OPT) \
           -Iinclude -Isrc -I$(BLASINC) -I/usr/include/cjson
LDLIBS  += -L$(BLASLIB) -Wl,-rpath,$(BLASLIB) -lopenblas -lzip -lcjson -lpng16 -lz -lm -fopenmp
SAN     ?=

# MPI (Open MPI): detected from mpicc; `make MPI=0` builds without it. Only
# src/dist/dist.c includes <mpi.h>; everything links libmpi when it is on.
MPI     ?= 1
MPICC   ?= $(shell command -v mpicc 2>/dev/null)
ifeq ($(MPI),1)
ifneq ($(MPICC),)
CFLAGS  += -DNPRED_HAVE_MPI $(shell $(MPICC) --showme:compile 2>/dev/null)
LDLIBS  += $(shell $(MPICC) --showme:link 2>/dev/null)
MPI_MODE := mpi
endif
endif
MPI_MODE ?= nompi

LIB_SRC   := $(sort $(wildcard src/*/*.c))
CLI_SRC   := $(sort $(wildcard cli/*.c))
EX_SRC    := $(sort $(wildcard examples/*.c))
EXAMPLES  := $(EX_SRC:examples/%.c=$(BUILD)/examples/%)
TEST_SRC  := $(sort $(wildcard tests/test_*.c))
# Python package tests (Debian's /usr/bin/python3 + python3-numpy), run on the
# shared library, with tests/pyref (the C side of their bit-for-bit comparisons)
PY_TESTS  := $(sort $(wildcard tests/python/test_*.py))
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TESTS     := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCHES   := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
DEPS_OK   := $(BUILD)/.deps-ok

.SECONDARY:
.PHONY: all lib test sanitize debug bench demo deps clean FORCE
all: $(BUILD)/libnpred.a $(BUILD)/libnpred.so $(BUILD)/npred $(EXAMPLES)

lib: $(BUILD)/libnpred.a $(BUILD)/libnpred.so

deps: $(DEPS_OK)
# checked on every build (a fast dpkg query): a missing package is installed (as root)
# or named with the exact apt-get line
$(DEPS_OK): FORCE
	@sh scripts/deps.sh
	@mkdir -p $(dir $@) && touch $@

$(BUILD)/obj/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) -MMD -MP -c $< -o $@

# Rebuild the MPI layer when MPI support is switched on or off.
$(BUILD)/mpi.mode: FORCE
	@mkdir -p $(dir $@)
	@echo "$(MPI_MODE)" | cmp -s - $@ || echo "$(MPI_MODE)" > $@
$(BUILD)/obj/src/dist/dist.o: $(BUILD)/mpi.mode
FORCE:

$(BUILD)/libnpred.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libnpred.so: $(LIB_OBJ)
	$(CC) -shared $(SAN) -o $@ $^ $(LDLIBS)

$(BUILD)/npred: $(CLI_OBJ) $(BUILD)/libnpred.a
	$(CC) $(SAN) -o $@ $(CLI_OBJ) $(BUILD)/libnpred.a $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/obj/tests/harness.o $(BUILD)/libnpred.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(BUILD)/obj/tests/harness.o $(BUILD)/libnpred.a $(LDLIBS)

$(BUILD)/examples/%: $(BUILD)/obj/examples/%.o $(BUILD)/libnpred.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(BUILD)/libnpred.a $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libnpred.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(BUILD)/libnpred.a $(LDLIBS)

# Under the sanitizers Python loads the instrumented libnpred.so with the sanitizer
# runtimes preloaded (leak checking off: the interpreter itself keeps memory at exit).
PY_PRELOAD = $(if $(SAN),$(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libubsan.so))

test: $(TESTS) $(BUILD)/npred $(BUILD)/libnpred.so $(BUILD)/tests/pyref
	@NPRED_BIN=./$(BUILD)/npred NPRED_PY_PRELOAD="$(strip $(PY_PRELOAD))" \
	    sh scripts/run-tests.sh $(BUILD) $(TESTS) $(PY_TESTS)

# Same tests under AddressSanitizer + UndefinedBehaviorSanitizer.
sanitize debug:
	@$(MAKE) --no-print-directory test BUILD=build-san OPT="-O1 -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

bench: $(BENCHES)
	@for b in $(BENCHES); do echo "== $$b"; ./$$b || exit 1; done

demo: $(BUILD)/npred
	./$(BUILD)/npred demo

clean:
	rm -rf $(BUILD) build build-san

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
