# npred build. `make` builds libnpred (static + shared, soname libnpred.so.0),
# libnpred_mpi (when Open MPI is found) and the npred binary; `make test` builds
# and runs every test; `make sanitize` runs them under ASan/UBSan; `make bench`
# runs the benchmarks; `make demo` runs the main job; `make install PREFIX=...
# [DESTDIR=...]` installs (docs/c-api.md). `make PORTABLE=1` builds for any
# x86-64-v3 CPU (Haswell / Zen 1 and later) instead of this machine's CPU.
# Sources are found by wildcard: add a .c file and it is built.

CC      ?= gcc
BUILD   ?= build
PORTABLE ?= 0
ifeq ($(PORTABLE),1)
OPT     ?= -O3 -march=x86-64-v3 -mtune=generic
else
OPT     ?= -O3 -march=native
endif
BLASINC ?= /usr/include/x86_64-linux-gnu/openblas-openmp
BLASLIB ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS    ?= openblas
H5INC   ?= /usr/include/hdf5/serial
H5LIB   ?= /usr/lib/x86_64-linux-gnu/hdf5/serial
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -fvisibility=hidden -fopenmp -g $(OPT) \
           -Iinclude -I$(BLASINC) -I/usr/include/cjson -I$(H5INC)
LDLIBS  += -L$(BLASLIB) -Wl,-rpath,$(BLASLIB) -l$(BLAS) -L$(H5LIB) -lhdf5 -lzip -lcjson -lbrotlienc -lpng16 -lz -lm -fopenmp
SAN     ?=

# Debian packages are checked (as root: installed) while this file is read,
# before mpicc is looked for, so a first `make test` on a fresh machine installs
# Open MPI and builds with it. Once per make (sub-makes inherit the result).
ifeq ($(filter-out clean,$(MAKECMDGOALS))$(if $(MAKECMDGOALS),,all),)
else ifndef NPRED_DEPS_CHECKED
NPRED_DEPS_RC := $(shell sh scripts/deps.sh >&2; echo $$?)
ifneq ($(NPRED_DEPS_RC),0)
$(error npred: required Debian packages are missing (see above))
endif
export NPRED_DEPS_CHECKED := 1
endif

# MPI (Open MPI): detected from mpicc; `make MPI=0` builds without it on
# purpose (the MPI tests are then left out and say so; a build that lacks MPI
# without MPI=0 fails them). Only src/mpi/ includes <mpi.h>: it is built into
# its own library, libnpred_mpi, which the npred binary (for `mpirun npred
# train`), test_dist and bench_dist link; libnpred never needs libmpi.
MPI     ?= 1
MPICC   ?= $(shell command -v mpicc 2>/dev/null)
ifeq ($(MPI),1)
ifneq ($(MPICC),)
MPI_CFLAGS := $(shell $(MPICC) --showme:compile 2>/dev/null)
MPI_LDLIBS := $(shell $(MPICC) --showme:link 2>/dev/null)
MPI_MODE := mpi
endif
else
CFLAGS  += -DNPRED_MPI_OFF
MPI_MODE := off
endif
MPI_MODE ?= nompi

# Version from include/npred/version.h (NPRED_VERSION_MAJOR/MINOR/PATCH).
vpart    = $(shell sed -n 's/^\#define NPRED_VERSION_$(1) *\([0-9][0-9]*\).*/\1/p' include/npred/version.h 2>/dev/null)
VMAJOR  := $(or $(call vpart,MAJOR),0)
VERSION := $(VMAJOR).$(or $(call vpart,MINOR),1).$(or $(call vpart,PATCH),0)
SONAME  := libnpred.so.$(VMAJOR)
SO_MPI  := libnpred_mpi.so.$(VMAJOR)

LIB_SRC   := $(sort $(filter-out src/mpi/%,$(wildcard src/*/*.c)))
MPI_SRC   := $(sort $(wildcard src/mpi/*.c))
CLI_SRC   := $(sort $(wildcard cli/*.c))
EX_SRC    := $(sort $(wildcard examples/*.c))
EXAMPLES  := $(EX_SRC:examples/%.c=$(BUILD)/examples/%)
TEST_SRC  := $(sort $(wildcard tests/test_*.c))
# Python package tests (Debian's /usr/bin/python3 + python3-numpy), run on the
# shared library, with tests/pyref (the C side of their bit-for-bit comparisons)
PY_TESTS  := $(sort $(wildcard tests/python/test_*.py)) tests/test_floors.py
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
MPI_OBJ   := $(MPI_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TESTS     := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCHES   := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
DEPS_OK   := $(BUILD)/.deps-ok

.SECONDARY:
.PHONY: all lib test sanitize tsan debug bench demo deps install clean fuzz fuzz-build FORCE
ifeq ($(MPI_MODE),mpi)
# programs that may run under mpirun link the MPI backend and enable it
MPI_LIBS   := $(BUILD)/libnpred_mpi.a
MPI_TARGETS := $(BUILD)/libnpred_mpi.a $(BUILD)/libnpred_mpi.so
MPI_USERS  := $(BUILD)/npred $(BUILD)/tests/test_dist $(BUILD)/tests/test_video_dist $(BUILD)/bench/bench_dist
MPI_USER_OBJ := $(BUILD)/obj/cli/cmd_train.o $(BUILD)/obj/tests/test_dist.o $(BUILD)/obj/tests/test_video_dist.o \
                $(BUILD)/obj/bench/bench_dist.o
$(MPI_USER_OBJ): CFLAGS += -DNPRED_HAVE_MPI
$(MPI_OBJ): CFLAGS += $(MPI_CFLAGS)
endif
LIBS := $(BUILD)/libnpred.a $(BUILD)/libnpred.so $(MPI_TARGETS)
all: $(LIBS) $(BUILD)/npred $(EXAMPLES)

lib: $(LIBS)

deps: $(DEPS_OK)
# (the packages are checked when the Makefile is read: see the top)
$(DEPS_OK): FORCE
	@mkdir -p $(dir $@) && touch $@

# The library, tests and benchmarks see the internal headers (src/); the CLI and
# the examples are compiled with the public ones (include/npred/) only.
$(BUILD)/obj/src/%.o $(BUILD)/obj/tests/%.o $(BUILD)/obj/bench/%.o $(BUILD)/obj/fuzz/%.o: CFLAGS += -Isrc
# the FFT convolution's vector code is written as products and sums: let them be fused
# multiply-adds (ISO C mode keeps them apart otherwise)
$(BUILD)/obj/src/kernels/conv2d_fft.o: CFLAGS += -ffp-contract=fast

$(BUILD)/obj/%.o: %.c $(BUILD)/cflags.stamp | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) -MMD -MP -c $< -o $@

# Rebuild every object when the compiler or its flags change (a stale object
# built with other flags, e.g. before -fvisibility=hidden, must not survive).
# (expanded here, once: target-specific additions below must not change it)
STAMP_FLAGS := $(CC) $(CFLAGS) $(SAN)
$(BUILD)/cflags.stamp: FORCE
	@mkdir -p $(dir $@)
	@echo '$(STAMP_FLAGS)' | cmp -s - $@ || echo '$(STAMP_FLAGS)' > $@

# Relink every program when the link flags change (e.g. make tsan links the
# reference BLAS where make test links OpenBLAS).
LINK_FLAGS := $(LDLIBS)
$(BUILD)/ldflags.stamp: FORCE
	@mkdir -p $(dir $@)
	@echo '$(LINK_FLAGS)' | cmp -s - $@ || echo '$(LINK_FLAGS)' > $@

# Rebuild the MPI layer when MPI support is switched on or off.
$(BUILD)/mpi.mode: FORCE
	@mkdir -p $(dir $@)
	@echo "$(MPI_MODE)" | cmp -s - $@ || echo "$(MPI_MODE)" > $@
$(BUILD)/obj/cli/cmd_train.o $(BUILD)/obj/tests/test_dist.o $(BUILD)/obj/tests/test_video_dist.o \
    $(BUILD)/obj/bench/bench_dist.o: $(BUILD)/mpi.mode
FORCE:

$(BUILD)/libnpred.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library: libnpred.so.X.Y.Z with soname libnpred.so.X, and the two
# links a build and a link step use. Only NPRED_API functions are exported.
$(BUILD)/libnpred.so.$(VERSION): $(LIB_OBJ) $(BUILD)/ldflags.stamp src/libnpred.map
	$(CC) -shared $(SAN) -Wl,-soname,$(SONAME) -Wl,--version-script=src/libnpred.map -o $@ $(LIB_OBJ) $(LDLIBS)

$(BUILD)/libnpred.so: $(BUILD)/libnpred.so.$(VERSION)
	ln -sf libnpred.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf libnpred.so.$(VERSION) $@

$(BUILD)/libnpred_mpi.a: $(MPI_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libnpred_mpi.so.$(VERSION): $(MPI_OBJ) $(BUILD)/libnpred.so
	$(CC) -shared $(SAN) -Wl,-soname,$(SO_MPI) -o $@ $(MPI_OBJ) -L$(BUILD) -lnpred $(MPI_LDLIBS)

$(BUILD)/libnpred_mpi.so: $(BUILD)/libnpred_mpi.so.$(VERSION)
	ln -sf libnpred_mpi.so.$(VERSION) $(BUILD)/$(SO_MPI)
	ln -sf libnpred_mpi.so.$(VERSION) $@

$(BUILD)/npred: $(CLI_OBJ) $(BUILD)/libnpred.a $(MPI_LIBS) $(BUILD)/ldflags.stamp
	$(CC) $(SAN) -o $@ $(CLI_OBJ) $(MPI_LIBS) $(BUILD)/libnpred.a $(LDLIBS) $(MPI_LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/obj/tests/harness.o $(BUILD)/libnpred.a $(BUILD)/ldflags.stamp
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $(filter %.o,$^) $(BUILD)/libnpred.a $(LDLIBS)

# test_alloc_faults fails chosen allocations of the library (every malloc of
# libnpred.a goes through its __wrap_malloc)
$(BUILD)/tests/test_alloc_faults: LDLIBS += -Wl,--wrap=malloc
# the fuzz-regression replay runs the fuzzers' own target functions
# (and the CLI's PNG decoder, which the png target fuzzes)
$(BUILD)/tests/test_fuzz_regressions: $(BUILD)/obj/fuzz/targets.o $(BUILD)/obj/cli/png_read.o
# test_faults preloads a shim that makes write/fsync/rename fail (built without sanitizers)
$(BUILD)/tests/test_faults: $(BUILD)/tests/fault_shim.so
$(BUILD)/tests/fault_shim.so: tests/fault_shim.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -O2 -fPIC -shared -o $@ $< -ldl

$(BUILD)/tests/test_dist $(BUILD)/tests/test_video_dist: $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/obj/tests/harness.o $(BUILD)/libnpred.a $(MPI_LIBS) $(BUILD)/ldflags.stamp
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(BUILD)/obj/tests/harness.o $(MPI_LIBS) $(BUILD)/libnpred.a $(LDLIBS) $(MPI_LDLIBS)

$(BUILD)/bench/bench_dist: $(BUILD)/obj/bench/bench_dist.o $(BUILD)/libnpred.a $(MPI_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(MPI_LIBS) $(BUILD)/libnpred.a $(LDLIBS) $(MPI_LDLIBS)

$(BUILD)/examples/%: $(BUILD)/obj/examples/%.o $(BUILD)/libnpred.a $(BUILD)/ldflags.stamp
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(BUILD)/libnpred.a $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libnpred.a $(BUILD)/ldflags.stamp
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $< $(BUILD)/libnpred.a $(LDLIBS)

# Under the sanitizers Python loads the instrumented libnpred.so with the sanitizer
# runtimes preloaded (leak checking off: the interpreter itself keeps memory at exit;
# no quarantine, so that the tests of flat memory over open/free cycles measure npred).
PY_PRELOAD = $(if $(SAN),$(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libubsan.so))

# test_install runs `make install` with these settings into a temporary prefix
test: $(TESTS) all $(BUILD)/tests/pyref
	@NPRED_BIN=./$(BUILD)/npred NPRED_PY_PRELOAD="$(strip $(PY_PRELOAD))" \
	    NPRED_BUILD='$(BUILD)' NPRED_OPT='$(OPT)' NPRED_SAN='$(SAN)' NPRED_MPI='$(MPI)' \
	    NPRED_CC='$(CC)' NPRED_BLAS='$(BLAS)' NPRED_BLASLIB='$(BLASLIB)' \
	    sh scripts/run-tests.sh $(BUILD) $(TESTS) $(PY_TESTS)

# Same tests under AddressSanitizer + UndefinedBehaviorSanitizer.
sanitize debug:
	@$(MAKE) --no-print-directory test BUILD=build-san OPT="-O1 -fno-omit-frame-pointer -Wno-psabi" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

# The suite under ThreadSanitizer (docs/reliability.md): clang with LLVM's
# OpenMP runtime, whose Archer tool tells TSan about OpenMP's synchronisation;
# the single-threaded reference BLAS (libblas-dev, only cblas_sgemm is used)
# instead of OpenBLAS, whose OpenMP build threads every call, brings libgomp
# in beside libomp and spin-waits in uninstrumented code (hours under TSan on
# a loaded machine); without MPI and the Python tests (an uninstrumented
# interpreter cannot load a TSan library); libomp itself is not instrumented
# (ignore_noninstrumented_modules, as Archer asks), and tests/tsan.supp names
# the one report inside its thread start-up.
ARCHER ?= $(firstword $(wildcard /usr/lib/llvm-*/lib/libarcher.so))
tsan:
	@sh scripts/deps.sh fuzz
	@OMP_TOOL_LIBRARIES=$(ARCHER) TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 ignore_noninstrumented_modules=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	    $(MAKE) --no-print-directory test BUILD=build-tsan CC=clang MPI=0 PY_TESTS= \
	    BLASLIB=/usr/lib/x86_64-linux-gnu/blas BLAS=blas \
	    OPT="-O1 -g -fno-omit-frame-pointer -Wno-psabi -Wno-pass-failed" SAN="-fsanitize=thread"

# Every bench records its figures in $(BUILD)/bench/part_<bench>.json (bench/bench_report.h);
# the summary (bench/summary.c) merges them into one table and $(BUILD)/bench/summary.json
# (docs/performance.md). A failing bench is reported and the others still run.
bench: $(BENCHES) $(BUILD)/bench/summary $(BUILD)/npred
	@rm -f $(BUILD)/bench/part_*.json $(BUILD)/bench/summary.json
	@fail=0; for b in $(BENCHES); do echo "== $$b"; \
	    NPRED_BENCH_DIR=$(BUILD)/bench NPRED_BIN=./$(BUILD)/npred ./$$b || { echo "== $$b FAILED"; fail=1; }; done; \
	    ./$(BUILD)/bench/summary $(BUILD)/bench || fail=1; exit $$fail

# libFuzzer targets (fuzz/targets.c; docs/reliability.md), built with clang +
# ASan/UBSan into build-fuzz/, each run for FUZZ_SECONDS (a campaign), or, with
# FUZZ_RUNS=N, for exactly N inputs from the seed FUZZ_SEED (a run that repeats
# exactly: CI's); a target written name:N runs N inputs. Needs clang and
# libfuzzer-14-dev (scripts/deps.sh fuzz installs them); `make test` does not.
FUZZ_SECONDS ?= 10
FUZZ_RUNS    ?=
FUZZ_SEED    ?= 1
FUZZ_TARGETS ?= npy pickle pth safetensors dataset_zip model_config trainer_config dataset_config mei_config \
                submission_csv png hdf5 video_config video_pth
FUZZ_NAMES   := $(foreach t,$(FUZZ_TARGETS),$(firstword $(subst :, ,$(t))))
# (no stack-depth coverage: the stack's depth in bytes changes with where ASLR puts the
# stack, so a run with a fixed seed would not repeat; docs/reliability.md)
FUZZ_SAN     := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
                -fno-sanitize-coverage=stack-depth
# (-Wno-pass-failed here and in tsan: clang does not vectorize at -O1, so each
# `omp simd` loop would draw a "loop not vectorized" note; the results do not change)
fuzz:
	@sh scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory fuzz-build BUILD=build-fuzz CC=clang MPI=0 \
	    OPT="-O1 -fno-omit-frame-pointer -Wno-psabi -Wno-pass-failed" SAN="$(FUZZ_SAN)"
	@FUZZ_RUNS="$(FUZZ_RUNS)" FUZZ_SEED="$(FUZZ_SEED)" sh scripts/fuzz.sh build-fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-build: $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%) $(BUILD)/fuzz/h5_seed

$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_one.c $(BUILD)/obj/fuzz/targets.o $(BUILD)/obj/cli/png_read.o $(BUILD)/libnpred.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(subst fuzzer-no-link,fuzzer,$(SAN)) -DNPRED_FUZZ_TARGET='"$*"' -o $@ $< \
	    $(BUILD)/obj/fuzz/targets.o $(BUILD)/obj/cli/png_read.o $(BUILD)/libnpred.a $(LDLIBS)

# the hdf5 target's seed files (Python has no HDF5 writer here); plain, no sanitizers
$(BUILD)/fuzz/h5_seed: fuzz/h5_seed.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

demo: $(BUILD)/npred
	./$(BUILD)/npred demo

# ---- install: `make install PREFIX=/usr/local [DESTDIR=stage/]`
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
# Debian's python3 looks in /usr/lib/python3/dist-packages for PREFIX=/usr and in
# <prefix>/lib/python3.X/dist-packages elsewhere (/usr/local/lib/python3.11/...)
PYVER      := $(shell /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PYTHONDIR  ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/lib/python3/dist-packages,$(PREFIX)/lib/python$(or $(PYVER),3)/dist-packages)
PC_PRIVATE := -L$(BLASLIB) -l$(BLAS) -L$(H5LIB) -lhdf5 -lzip -lcjson -lbrotlienc -lpng16 -lz -lm -fopenmp
pcsubst = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
              -e 's|@VERSION@|$(VERSION)|g' -e 's|@PRIVATE_LIBS@|$(1)|'

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/npred
	install -m 0755 $(BUILD)/npred $(DESTDIR)$(BINDIR)/npred
	install -m 0644 $(BUILD)/libnpred.a $(DESTDIR)$(LIBDIR)/libnpred.a
	install -m 0755 $(BUILD)/libnpred.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libnpred.so.$(VERSION)
	ln -sf libnpred.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libnpred.so
	install -m 0644 include/npred/*.h $(DESTDIR)$(INCLUDEDIR)/npred/
	$(call pcsubst,$(PC_PRIVATE)) npred.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/npred.pc
ifeq ($(MPI_MODE),mpi)
	install -m 0644 $(BUILD)/libnpred_mpi.a $(DESTDIR)$(LIBDIR)/libnpred_mpi.a
	install -m 0755 $(BUILD)/libnpred_mpi.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libnpred_mpi.so.$(VERSION)
	ln -sf libnpred_mpi.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SO_MPI)
	ln -sf $(SO_MPI) $(DESTDIR)$(LIBDIR)/libnpred_mpi.so
	$(call pcsubst,$(MPI_LDLIBS)) npred_mpi.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/npred_mpi.pc
else
	rm -f $(DESTDIR)$(INCLUDEDIR)/npred/mpi.h
endif
	@if [ -d python/npred ]; then \
	    echo "install python/npred -> $(DESTDIR)$(PYTHONDIR)/npred"; \
	    install -d $(DESTDIR)$(PYTHONDIR)/npred && \
	    find python/npred -name '*.py' -exec install -m 0644 {} $(DESTDIR)$(PYTHONDIR)/npred/ \; ; \
	fi

clean:
	rm -rf $(BUILD) build build-san build-fuzz build-tsan

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
