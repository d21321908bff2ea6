#!/bin/sh
# Check the Debian packages npred builds against. As root, install what is
# missing; otherwise print the exact apt-get line. Required packages stop the
# build when missing; the optional ones (Open MPI, for multi-process training:
# the build uses MPI when mpicc is found) only get a note.
# `sh scripts/deps.sh fuzz` checks the fuzzing toolchain instead (`make fuzz`
# only: clang, libFuzzer and LLVM's OpenMP runtime; `make test` never needs them).
REQ="build-essential libopenblas-openmp-dev libzip-dev libcjson-dev libpng-dev zlib1g-dev libhdf5-dev python3 python3-numpy"
# the SENSORIUM 2023 submission file (Parquet) compresses its pages with brotli
REQ="$REQ libbrotli-dev"
# the test of `npred report` opens its index.html in headless Chromium
REQ="$REQ chromium"
# the test of `make install` builds a program with `pkg-config --cflags --libs npred`
REQ="$REQ pkgconf"
OPT="libopenmpi-dev openmpi-bin"
if [ "$1" = fuzz ]; then
    REQ="clang libfuzzer-14-dev libomp-dev libblas-dev python3-numpy"
    OPT=""
fi
missing_in() {
    out=""
    for p in $1; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out="$out $p"
    done
    echo "$out"
}
req=$(missing_in "$REQ")
opt=$(missing_in "$OPT")
[ -z "$req$opt" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "npred: installing Debian packages:$req$opt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q $req $opt && exit 0
    echo "npred: apt-get install failed" >&2
    [ -z "$req" ] && exit 0 # only optional packages failed: build without them
    exit 1
fi
if [ -n "$req" ]; then
    echo "npred: missing Debian packages:$req"
    echo "Install them with:"
    echo "  sudo apt-get install -y$req$opt"
    exit 1
fi
echo "npred: note: optional packages missing:$opt (multi-process training); install with: sudo apt-get install -y$opt"
exit 0
