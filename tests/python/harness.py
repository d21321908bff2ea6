"""The Python tests' harness: the same closing line as tests/harness.c
("N passed, N failed[, N skipped]"), exit status 1 on any failure.

    def test_x(): check(a == b, "a is %r" % a)
    run(test_x); sys.exit(summary())

A test passes when none of its checks failed and it raised nothing. Paths are
relative to the repository root (make test runs there)."""
import os
import subprocess
import sys
import tempfile
import traceback

import numpy as np

BUILD = os.environ.get("NPRED_BUILD", "build")
NPRED_BIN = os.path.join(BUILD, "npred")
PYREF_BIN = os.path.join(BUILD, "tests", "pyref")
FIXTURES = os.path.join("tests", "fixtures")
CHECKPOINTS = os.path.join("..", "shared", "checkpoints")

_passed = _failed = _skipped = 0
_cur_failed = False
_cur_skipped = False


def check(ok, msg="check failed"):
    global _cur_failed
    if not ok:
        _cur_failed = True
        fr = traceback.extract_stack(limit=2)[0]
        print("FAIL %s:%d: %s" % (os.path.basename(fr.filename), fr.lineno, msg))
    return bool(ok)


def check_equal(got, ref, what):
    """Bit-for-bit equality of two arrays (same dtype, shape and bytes; NaN == NaN
    only when the bits agree)."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.dtype != ref.dtype or got.shape != ref.shape:
        return check(False, "%s: %s %s vs %s %s" % (what, got.dtype, got.shape, ref.dtype, ref.shape))
    same = np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(ref).tobytes()
    if not same:
        d = np.abs(got.astype(np.float64) - ref.astype(np.float64)) if got.dtype.kind in "fiu" else None
        return check(False, "%s: not bit-identical%s" % (what, "" if d is None else
                                                          " (max |diff| %g)" % np.nanmax(d)))
    return True


def check_close(got, ref, rtol, atol, what):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return check(False, "%s: shape %s vs %s" % (what, got.shape, ref.shape))
    err = np.abs(got - ref) - (atol + rtol * np.abs(ref))
    worst = np.max(err) if err.size else -1.0
    return check(not (worst > 0) and not np.isnan(got).any(), "%s: outside rtol %g atol %g (worst excess %g)"
                 % (what, rtol, atol, worst))


def check_raises(exc, fn, *words):
    """fn() raises exc and its message contains every word."""
    try:
        fn()
    except exc as e:
        msg = str(e)
        return check(all(w in msg for w in words), "message %r lacks %s" % (msg, words))
    except Exception as e:  # the wrong kind
        return check(False, "expected %s, got %s: %s" % (exc.__name__, type(e).__name__, e))
    return check(False, "expected %s, nothing raised" % exc.__name__)


def skip(reason):
    global _cur_skipped
    _cur_skipped = True
    print("SKIP: %s" % reason)


def run(fn):
    global _passed, _failed, _skipped, _cur_failed, _cur_skipped
    _cur_failed = _cur_skipped = False
    try:
        fn()
    except Exception:
        _cur_failed = True
        print("FAIL %s raised:" % fn.__name__)
        print("  " + traceback.format_exc().replace("\n", "\n  "))
    if _cur_failed:
        _failed += 1
        print("FAIL %s" % fn.__name__)
    elif _cur_skipped:
        _skipped += 1
    else:
        _passed += 1


def summary():
    line = "%d passed, %d failed" % (_passed, _failed)
    if _skipped:
        line += ", %d skipped" % _skipped
    print(line)
    return 1 if _failed else 0


def tmpdir():
    return tempfile.mkdtemp(prefix="npred-py-")


def sh(*args, ok=True):
    """Run a program; returns (rc, stdout+stderr). With ok, a non-zero exit is a failed check."""
    p = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.decode("utf-8", "replace")
    if ok:
        check(p.returncode == 0, "%s exited %d: %s" % (" ".join(map(str, args[:3])), p.returncode, out[-2000:]))
    return p.returncode, out
