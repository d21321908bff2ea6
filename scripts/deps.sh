#!/bin/sh
# Check the Debian packages npred builds against; install them when run as root,
# otherwise print the exact apt-get line and stop.
# libopenmpi-dev + openmpi-bin: optional multi-process training (the build uses
# MPI when mpicc is found; without it npred builds and runs single-process).
PKGS="build-essential libopenblas-openmp-dev libzip-dev libcjson-dev libpng-dev zlib1g-dev libopenmpi-dev openmpi-bin"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "npred: missing Debian packages:$missing"
if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q $missing && exit 0
    echo "npred: apt-get install failed" >&2
    exit 1
fi
echo "Install them with:"
echo "  sudo apt-get install -y$missing"
exit 1
