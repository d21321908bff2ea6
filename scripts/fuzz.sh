#!/bin/sh
# Run libFuzzer targets: sh scripts/fuzz.sh BUILD SECONDS TARGET[:RUNS]...
#
# By time (a campaign; FUZZ_RUNS unset): each target runs for SECONDS. Its
# corpus grows in BUILD/corpus/<target> (seeded by fuzz/make_seeds.py) and is
# kept from run to run.
#
# By count (FUZZ_RUNS=N, what CI runs): each target runs exactly N inputs (or
# RUNS where the target is written TARGET:RUNS) with the random seed FUZZ_SEED
# (default 1), one thread, from the seeds alone (read in a fixed order, without
# the ../shared checkpoints) into a fresh BUILD/smoke/corpus/<target> (seeds and
# logs under BUILD/smoke/ too, apart from a campaign's), so that a run
# repeats exactly: the same inputs, the same coverage, on any machine with the
# same compilers. SECONDS is not used then.
#
# A crash is saved under BUILD/artifacts/<target>/ and fails the run (copy it
# to tests/fuzz-regressions/<target>/ once fixed). FUZZ_ARGS adds libFuzzer
# options (e.g. FUZZ_ARGS=-jobs=2 for a campaign).
build=$1; secs=$2; shift 2
py=/usr/bin/python3
runs=${FUZZ_RUNS:-}
seed=${FUZZ_SEED:-1}
case $runs in *[!0-9]*) echo "fuzz: FUZZ_RUNS must be a number of inputs, not '$runs'" >&2; exit 2 ;; esac
case $seed in ''|*[!0-9]*) echo "fuzz: FUZZ_SEED must be a positive number, not '$seed'" >&2; exit 2 ;; esac
[ "$seed" -gt 0 ] || { echo "fuzz: FUZZ_SEED must be > 0 (libFuzzer draws a random seed for 0)" >&2; exit 2; }
counted=$runs
for spec in "$@"; do case $spec in *:*) counted=1 ;; esac; done
# a counted run keeps to BUILD/smoke/ (its seeds, corpora, logs), away from a campaign's files
out=$build${counted:+/smoke}
seeds=$out/seeds
rm -rf "$seeds"
$py fuzz/make_seeds.py "$seeds" ${counted:+--repo-only} > /dev/null || { echo "fuzz: seed generation failed" >&2; exit 1; }
mkdir -p "$seeds/hdf5" && "./$build/fuzz/h5_seed" "$seeds/hdf5" || { echo "fuzz: HDF5 seeds failed" >&2; exit 1; }
fail=0
for spec in "$@"; do
    t=${spec%%:*}
    n=$runs
    case $spec in *:*) n=${spec#*:} ;; esac
    case $n in *[!0-9]*) echo "fuzz: $spec: the run count must be a number" >&2; exit 2 ;; esac
    leaks=1
    case $t in
        npy) dict=npy; max=8192 ;;
        pickle|pth) dict=pickle; max=16384 ;;
        video_pth) dict=pickle; max=65536 ;;
        safetensors) dict=safetensors; max=8192 ;;
        dataset_zip) dict=zip; max=131072 ;;
        submission_csv) dict=csv; max=8192 ;;
        png) dict=png; max=16384 ;;
        # libhdf5 1.10 leaks on some corrupted files (docs/reliability.md): its leaks are not ours
        hdf5) dict=hdf5; max=32768; leaks=0 ;;
        *) dict=json; max=8192 ;;
    esac
    mkdir -p "$build/artifacts/$t"
    log="$out/fuzz_$t.log"
    if [ -n "$n" ]; then
        # a fixed count: a fresh corpus, the seeds listed in name order (libFuzzer's own
        # directory walk follows the file system's order), no reloading, one thread, no
        # mutations from compared values (they include addresses, which ASLR moves)
        corpus="$out/corpus/$t"
        rm -rf "$corpus" && mkdir -p "$corpus"
        list=$(find "$seeds/$t" -type f | LC_ALL=C sort | tr '\n' ',')
        printf '%s\n' "${list%,}" > "$out/$t.seeds"
        set -- -runs="$n" -seed="$seed" -reload=0 -use_cmp=0 -seed_inputs="@$out/$t.seeds" "$corpus"
        what="seed $seed"
    else
        mkdir -p "$build/corpus/$t"
        set -- -max_total_time="$secs" "$build/corpus/$t" "$seeds/$t"
        what="in ${secs}s"
    fi
    omp=
    [ -n "$n" ] && omp=OMP_NUM_THREADS=1
    env $omp ASAN_OPTIONS="detect_leaks=$leaks${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
        "./$build/fuzz/fuzz_$t" -dict="fuzz/dict/$dict.dict" -max_len=$max -detect_leaks=$leaks \
        -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$t/" $FUZZ_ARGS "$@" > "$log" 2>&1
    rc=$?
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n 1)
    if [ $rc -ne 0 ]; then
        fail=1
        grep -E 'ERROR|SUMMARY|failed|Test unit written' "$log" | head -n 8
        echo "fuzz_$t: FAILED after ${execs:-?} runs ($cov); log $log"
    else
        echo "fuzz_$t: ${execs:-?} runs $what, $cov, no crash"
    fi
done
exit $fail
