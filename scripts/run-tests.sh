#!/bin/sh
# Run every test program from the project root and sum their closing lines
# ("N passed, N failed[, N skipped]"). A program that crashes or prints no
# summary counts as one failure. Python tests (*.py) run with Debian's
# /usr/bin/python3 on the package in python/ and $build/libnpred.so.
build=$1; shift
run_one() {
    case $1 in
    *.py)
        if [ -n "$NPRED_PY_PRELOAD" ]; then
            LD_PRELOAD="$NPRED_PY_PRELOAD" ASAN_OPTIONS=detect_leaks=0:quarantine_size_mb=0 PYTHONPATH=python \
                NPRED_LIBRARY="$build/libnpred.so" NPRED_BUILD="$build" /usr/bin/python3 "$1"
        else
            PYTHONPATH=python NPRED_LIBRARY="$build/libnpred.so" NPRED_BUILD="$build" /usr/bin/python3 "$1"
        fi ;;
    *) "./$1" ;;
    esac
}
tp=0; tf=0; ts=0
for t in "$@"; do
    name=$(basename "$t")
    out=$(run_one "$t" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -z "$line" ]; then
        printf '%s\n' "$out" | tail -n 20
        echo "FAIL $name: exited $rc without a summary line"
        tf=$((tf + 1)); continue
    fi
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
    [ -z "$s" ] && s=0
    if [ "$f" -ne 0 ] || [ "$rc" -ne 0 ]; then
        printf '%s\n' "$out" | grep -E '^(FAIL|  )' | head -n 40
        [ "$f" -eq 0 ] && f=1
    fi
    printf '%-28s %s\n' "$name" "$line"
    tp=$((tp + p)); tf=$((tf + f)); ts=$((ts + s))
done
if [ "$ts" -gt 0 ]; then echo "$tp passed, $tf failed, $ts skipped"; else echo "$tp passed, $tf failed"; fi
[ "$tf" -eq 0 ]
