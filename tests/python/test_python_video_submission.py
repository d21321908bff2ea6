"""The SENSORIUM 2023 submission file (npred_video_submission_*, include/npred/results.h)
read back by an independent Parquet reader (parquet_read.py: the format specification,
numpy and libbrotlidec only): the kit's columns and types, every value bit for bit
(float32 predictions as exact doubles, NaN and infinities included), empty files and
lists, many rows over several pages and row groups, and errors that name the file;
and `npred predict --submission` on a video model: the file holds the model's outputs."""
import ctypes
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import FIXTURES, NPRED_BIN, PYREF_BIN, check, run, sh, summary, tmpdir

import parquet_read as pq
from npred import _lib

lib = _lib.lib


class Options(ctypes.Structure):
    _fields_ = [("brotli_quality", ctypes.c_int), ("page_bytes", ctypes.c_size_t),
                ("row_group_bytes", ctypes.c_size_t)]


P = ctypes.c_void_p
lib.npred_video_submission_options_default.restype = None
lib.npred_video_submission_options_default.argtypes = [ctypes.POINTER(Options)]
lib.npred_video_submission_open.restype = ctypes.c_int
lib.npred_video_submission_open.argtypes = [ctypes.POINTER(P), ctypes.c_char_p, ctypes.POINTER(Options)]
lib.npred_video_submission_add.restype = ctypes.c_int
lib.npred_video_submission_add.argtypes = [P, ctypes.c_char_p, ctypes.c_int64, P, ctypes.c_int64, ctypes.c_int64, P]
lib.npred_video_submission_close.restype = ctypes.c_int
lib.npred_video_submission_close.argtypes = [P]
lib.npred_video_submission_abort.restype = None
lib.npred_video_submission_abort.argtypes = [P]


def write(path, rows, opt=None):
    """rows: (mouse, trial, prediction (n, T) float32, neuron_ids (n,) uint32); returns the status
    and the error message of the first failing call."""
    h = P()
    bpath = path.encode()
    st = lib.npred_video_submission_open(ctypes.byref(h), bpath, ctypes.byref(opt) if opt else None)
    if st:
        return st, _lib.last_error()
    for mouse, trial, pred, ids in rows:
        pred = np.ascontiguousarray(pred, np.float32)
        ids = np.ascontiguousarray(ids, np.uint32)
        st = lib.npred_video_submission_add(h, mouse if isinstance(mouse, bytes) else mouse.encode(), trial,
                                            pred.ctypes.data, pred.shape[0], pred.shape[1], ids.ctypes.data)
        if st:
            msg = _lib.last_error()
            lib.npred_video_submission_abort(h)
            return st, msg
    st = lib.npred_video_submission_close(h)
    return st, _lib.last_error() if st else ""


def kit_rows(rng, mice=(("dynamic29156-11-10-Video-8744edeac3b4d1ce16b680916b5267ce", 7),
                        ("dynamic29228-2-10-Video-8744edeac3b4d1ce16b680916b5267ce", 5)), trials=3, frames=250):
    rows = []
    t = 0
    for mouse, n in mice:
        ids = rng.integers(0, 2 ** 32, size=n, dtype=np.uint64).astype(np.uint32)
        ids[0] = 4294967295  # beyond int32: must come back as uint32
        for _ in range(trials):
            pred = rng.standard_normal((n, frames)).astype(np.float32)
            rows.append((mouse, t * 7 + 1, pred, ids))
            t += 1
    return rows


def names(pf):
    return [leaf.path for leaf in pf.leaves]


def check_kit_schema(pf):
    """The schema pyarrow writes for the kit's DataFrame (mouse str, trial_indices int,
    prediction list of lists of Python floats, neuron_ids uint32 arrays)."""
    check(list(pf.columns) == ["mouse", "trial_indices", "prediction", "neuron_ids"],
          "columns %s" % list(pf.columns))
    check(names(pf) == [["mouse"], ["trial_indices"], ["prediction", "list", "element", "list", "element"],
                        ["neuron_ids", "list", "element"]], "leaf paths %s" % names(pf))
    by = {leaf.path[0]: leaf for leaf in pf.leaves}
    m, t, p, n = by["mouse"], by["trial_indices"], by["prediction"], by["neuron_ids"]
    check(m.element.get(1) == 6 and m.element.get(6) == 0 and 1 in m.element.get(10, {}), "mouse: UTF8 BYTE_ARRAY")
    check(t.element.get(1) == 2 and 6 not in t.element, "trial_indices: INT64 %s" % t.element)
    check(p.element.get(1) == 5, "prediction: DOUBLE leaf")
    check(n.element.get(1) == 1 and n.element.get(6) == 13 and n.element.get(10) == {10: {1: 32, 2: False}},
          "neuron_ids: INT32 UINT_32 Int(32, unsigned): %s" % n.element)
    check((m.max_rep, m.max_def, t.max_rep, t.max_def, p.max_rep, p.max_def, n.max_rep, n.max_def) ==
          (0, 1, 0, 1, 2, 5, 1, 3), "levels")
    for leaf in (p, n):  # optional group (LIST) / repeated group list / optional element ...
        kinds = [(e.get(3), e.get(6), e[4].decode()) for e in leaf.nodes]
        want = [(1, 3, leaf.path[0]), (2, None, "list"), (1, 13, "element")]
        if leaf is p:
            want[2] = (1, 3, "element")
            want += [(2, None, "list"), (1, None, "element")]
        check(kinds == want, "%s structure %s" % (leaf.path[0], kinds))
    for e in pf.schema[1:]:
        check(e.get(3) in (1, 2), "every field nullable or repeated: %s" % e)
    for rg in pf.row_groups:
        for cc in rg[1]:
            check(cc[3][4] == 4, "codec BROTLI, got %s" % cc[3][4])


def check_rows(pf, rows):
    c = pf.columns
    check(pf.num_rows == len(rows) and all(len(v) == len(rows) for v in c.values()),
          "%d rows, want %d" % (pf.num_rows, len(rows)))
    for i, (mouse, trial, pred, ids) in enumerate(rows):
        if i >= len(c["mouse"]):
            break
        check(c["mouse"][i] == (mouse if isinstance(mouse, bytes) else mouse.encode()), "row %d mouse" % i)
        check(c["trial_indices"][i] == trial and c["trial_indices"][i].dtype == np.int64, "row %d trial" % i)
        got = c["prediction"][i]
        pred = np.asarray(pred, np.float32)
        check(isinstance(got, list) and len(got) == pred.shape[0] and
              all(isinstance(x, list) and len(x) == pred.shape[1] for x in got), "row %d prediction shape" % i)
        if pred.size:
            arr = np.array(got, dtype=np.float64)
            check(arr.tobytes() == pred.astype(np.float64).tobytes(), "row %d prediction values" % i)
        nid = np.array(c["neuron_ids"][i], dtype=np.int32).view(np.uint32)
        check(len(c["neuron_ids"][i]) == len(ids) and (nid == np.asarray(ids, np.uint32)).all(),
              "row %d neuron ids" % i)


def test_round_trip_kit_schema():
    """Two sessions, three trials each, 250 frames (the kit's 300 - 50), NaN / inf / -0 /
    subnormal values: the kit's columns and types, every value bit for bit."""
    rng = np.random.default_rng(1)
    rows = kit_rows(rng)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45, 3.4028235e38, -1.0], np.float32)
    rows[1][2][0, :7] = special
    d = tmpdir()
    path = os.path.join(d, "predictions_live_main.parquet.brotli")
    st, msg = write(path, rows)
    check(st == 0, "write: %s" % msg)
    pf = pq.read(path)
    check_kit_schema(pf)
    check_rows(pf, rows)
    check(len(pf.row_groups) == 1, "one row group, got %d" % len(pf.row_groups))
    check(pf.created_by.startswith("npred version "), "created_by %r" % pf.created_by)
    check(pf.key_value is None, "no key-value metadata")
    got = np.array(pf.columns["prediction"][1][0][:7], np.float64)
    check(np.isnan(got[0]) and got[1] == np.inf and got[2] == -np.inf and np.signbit(got[3]) and got[3] == 0,
          "special values %s" % got)
    check(os.listdir(d) == ["predictions_live_main.parquet.brotli"], "no temporary file left: %s" % os.listdir(d))


def test_empty_file_and_lists():
    """No rows: a valid file with the schema and no row group. Rows with no neurons or no
    frames: empty lists (not nulls)."""
    d = tmpdir()
    path = os.path.join(d, "empty.parquet")
    st, msg = write(path, [])
    check(st == 0, "write: %s" % msg)
    pf = pq.read(path)
    check_kit_schema(pf)
    check(pf.num_rows == 0 and pf.row_groups == [], "empty: %d rows, %d row groups" % (pf.num_rows,
                                                                                       len(pf.row_groups)))
    rows = [("m", 0, np.zeros((0, 0), np.float32), np.zeros(0, np.uint32)),
            ("m", 1, np.zeros((3, 0), np.float32), np.array([5, 6, 7], np.uint32)),
            ("\u00e9t\u00e9", -5, np.ones((1, 1), np.float32), np.array([9], np.uint32)),
            ("m", 2 ** 62, np.zeros((0, 4), np.float32), np.zeros(0, np.uint32))]
    path = os.path.join(d, "lists.parquet")
    st, msg = write(path, rows)
    check(st == 0, "write: %s" % msg)
    pf = pq.read(path)
    check_rows(pf, rows)
    p = pf.columns["prediction"]
    check(p[0] == [] and p[1] == [[], [], []] and p[2] == [[1.0]] and p[3] == [], "empty lists %s" % p)
    check(pf.columns["neuron_ids"][0] == [] and pf.columns["mouse"][2].decode() == "\u00e9t\u00e9", "ids / utf-8")


def test_many_rows_pages_row_groups():
    """Many rows with small pages and row groups: several pages per chunk and several row
    groups, records never split, every value back; the default options give one row group."""
    rng = np.random.default_rng(2)
    rows = kit_rows(rng, mice=(("a", 40), ("b", 1), ("c", 17)), trials=60, frames=9)
    opt = Options()
    lib.npred_video_submission_options_default(ctypes.byref(opt))
    check(opt.brotli_quality == 5 and opt.page_bytes == 1 << 20 and opt.row_group_bytes == 256 << 20,
          "defaults %d %d %d" % (opt.brotli_quality, opt.page_bytes, opt.row_group_bytes))
    d = tmpdir()
    path = os.path.join(d, "many.parquet")
    st, msg = write(path, rows)
    check(st == 0, "write: %s" % msg)
    pf = pq.read(path)
    check(len(pf.row_groups) == 1 and len(pf.pages) == 4, "defaults: %d row groups %d pages" %
          (len(pf.row_groups), len(pf.pages)))
    check_rows(pf, rows)
    opt.page_bytes = 3000
    opt.row_group_bytes = 40000
    opt.brotli_quality = 1
    path2 = os.path.join(d, "many_small.parquet")
    st, msg = write(path2, rows, opt)
    check(st == 0, "write: %s" % msg)
    pf = pq.read(path2)
    check_kit_schema(pf)
    check_rows(pf, rows)
    check(len(pf.row_groups) > 3, "several row groups: %d" % len(pf.row_groups))
    check(len(pf.pages) > 4 * len(pf.row_groups), "several pages per chunk: %d pages, %d row groups" %
          (len(pf.pages), len(pf.row_groups)))
    check(all(p["type"] == 0 and p["header"][5][2] == 0 and p["header"][5][3] == 3 for p in pf.pages),
          "data pages v1, PLAIN values, RLE levels")
    # the pages are compressed in parallel: the same bytes with 1 and 3 threads
    lib.npred_set_threads.argtypes = [ctypes.c_int]
    files = []
    for threads in (1, 3):
        check(lib.npred_set_threads(threads) == 0, "set threads")
        path3 = os.path.join(d, "many_t%d.parquet" % threads)
        st, msg = write(path3, rows, opt)
        check(st == 0, msg)
        files.append(open(path3, "rb").read())
    check(files[0] == files[1] == open(path2, "rb").read(), "the file does not depend on the thread count")


def test_errors_name_the_file():
    """A path in a missing folder, a bad mouse, a negative shape: errors naming the file;
    after an abort nothing is written and an older file is kept."""
    d = tmpdir()
    bad = os.path.join(d, "no", "such", "out.parquet")
    st, msg = write(bad, [])
    check(st != 0 and bad in msg, "missing folder: %d %r" % (st, msg))
    path = os.path.join(d, "keep.parquet")
    with open(path, "wb") as f:
        f.write(b"old")
    one = np.ones((2, 3), np.float32)
    ids = np.array([1, 2], np.uint32)
    for mouse, what in ((b"", "empty mouse"), (b"\xff\xfe", "not UTF-8")):
        st, msg = write(path, [("m", 0, one, ids), (mouse, 1, one, ids)])
        check(st != 0 and path in msg and "mouse" in msg, "%s: %d %r" % (what, st, msg))
    h = P()
    check(lib.npred_video_submission_open(ctypes.byref(h), path.encode(), None) == 0, "open")
    st = lib.npred_video_submission_add(h, b"m", 3, one.ctypes.data, -1, 3, ids.ctypes.data)
    msg = _lib.last_error()
    check(st != 0 and path in msg and "shape" in msg, "negative shape: %r" % msg)
    st = lib.npred_video_submission_add(h, b"m", 3, None, 2, 3, ids.ctypes.data)
    check(st != 0 and path in _lib.last_error(), "no prediction: %r" % _lib.last_error())
    lib.npred_video_submission_abort(h)
    with open(path, "rb") as f:
        check(f.read() == b"old", "the older file is kept")
    check(sorted(os.listdir(d)) == ["keep.parquet"], "no temporary file left: %s" % os.listdir(d))
    bad_opt = Options(12, 1, 1)
    st, msg = write(os.path.join(d, "x.parquet"), [], bad_opt)
    check(st != 0 and "brotli" in msg, "quality 12: %r" % msg)


def test_reader_is_strict():
    """The test's reader refuses what it cannot account for (so that the checks above mean
    something): a cut file, a wrong magic, a corrupted page."""
    rng = np.random.default_rng(3)
    d = tmpdir()
    path = os.path.join(d, "s.parquet")
    st, msg = write(path, kit_rows(rng, trials=1, frames=5))
    check(st == 0, msg)
    data = open(path, "rb").read()
    for name, bad in (("cut", data[:-3]), ("magic", b"PAR0" + data[4:]),
                      ("page", data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])):
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(bad)
        try:
            pq.read(p)
            check(False, "%s: read without an error" % name)
        except (pq.FormatError, struct_error(), IndexError, ValueError, KeyError):
            pass


def two_session_reference():
    """A temporary folder with the mini movie scan's copy under another session name, and
    pyref's video model of both sessions with its outputs on the oracle tier in ref/."""
    d = tmpdir()
    scan = os.path.join(FIXTURES, "mini_movie_tree", "dynamic00000-1-1-Video-0123456789abcdef0123456789abcdef")
    scan2 = os.path.join(d, "dynamic00000-2-2-Video-copy")
    shutil.copytree(scan, scan2)
    ref = os.path.join(d, "ref")
    os.mkdir(ref)
    sh(PYREF_BIN, "video", ref, "oracle", scan, scan2)
    return d, scan, scan2, ref


def test_cli_submission():
    """`npred predict --submission` on a video model over two sessions (the mini movie
    scan and a copy under another name): every trial of the tier, in order, holds the
    model's whole-trial outputs for the frames from 50 on (pyref: the same model through
    the C API), bit for bit, with the sessions' unit ids."""
    d, scan, scan2, ref = two_session_reference()
    out = os.path.join(d, "predictions_file_oracle.parquet.brotli")
    rc, text = sh(NPRED_BIN, "predict", "--model", os.path.join(ref, "model"), "--data", scan, scan2, "--tier", "oracle",
                  "--submission", out)
    check("6 trials of 2 sessions" in text, text)
    keys = [os.path.basename(scan), os.path.basename(scan2)]
    rows = []
    k = 0
    while os.path.exists(os.path.join(ref, "%d_pred.npy" % k)):
        s, trial = np.load(os.path.join(ref, "%d_meta.npy" % k))
        ids = np.load(os.path.join(ref, "%d_ids.npy" % s))
        rows.append((keys[s], int(trial), np.load(os.path.join(ref, "%d_pred.npy" % k)), ids.astype(np.uint32)))
        k += 1
    check(len(rows) == 6 and [r[1] for r in rows] == [1, 6, 9, 1, 6, 9], "reference rows %s" % [r[1] for r in rows])
    check(all(r[2].shape[0] == 10 and 4 <= r[2].shape[1] <= 9 for r in rows), "(neurons, frames from 50 on)")
    pf = pq.read(out)
    check_kit_schema(pf)
    check_rows(pf, rows)


def test_python_submission_and_evaluate():
    """npred.submission on a video model writes the bytes of `npred predict --submission`;
    npred.evaluate gives `npred eval --json`'s numbers and the kit's correlation recomputed
    here with numpy from the scans' responses and the reference predictions."""
    import json
    import npred
    d, scan, scan2, ref = two_session_reference()
    model = os.path.join(ref, "model")
    c_out, py_out = os.path.join(d, "c.parquet"), os.path.join(d, "py.parquet")
    sh(NPRED_BIN, "predict", "--model", model, "--data", scan, scan2, "--tier", "oracle", "--submission", c_out)
    rows = npred.submission(model, [scan, scan2], "oracle", path=py_out)
    with open(c_out, "rb") as f:
        cb = f.read()
    with open(py_out, "rb") as f:
        pb = f.read()
    check(rows == 6 and pb == cb and len(pb) > 500, "%d rows; the file differs from the CLI's" % rows)
    m = npred.VideoModel.open(model)
    check(npred.submission(m, [scan], "oracle", path=py_out) == 3, "a VideoModel, one scan")
    # evaluation
    ev = npred.evaluate(model, [scan, scan2], "oracle")
    j = json.loads(sh(NPRED_BIN, "eval", "--model", model, "--data", scan, scan2, "--tier", "oracle", "--json")[1])
    close = lambda a, b: abs(a - b) <= 1e-14 * max(1.0, abs(b))  # cJSON's 15 digits
    check(ev.tier == "oracle" and ev.skip == j["skip"] == 50, "tier and skip")
    check(close(ev.overall["correlation"], j["overall"]["single_trial_correlation"]) and
          ev.overall["n_neurons"] == j["overall"]["n_neurons"] == 20, "overall %r" % ev.overall)
    keys = [os.path.basename(scan), os.path.basename(scan2)]
    check(list(ev.sessions) == keys == [s["data_key"] for s in j["sessions"]], "sessions %s" % list(ev.sessions))
    for s in j["sessions"]:
        e = ev.sessions[s["data_key"]]
        check(e["n_trials"] == s["n_trials"] == 3 and e["scored_frames"] == s["scored_frames"], "counts")
        check(close(e["correlation"], s["single_trial_correlation"]), "session correlation")
        check(list(e["unit_ids"]) == s["per_neuron"]["unit_id"], "unit ids")
        for k, jk in (("correlations", "single_trial_correlation"), ("response_mean", "response_mean"),
                      ("response_variance", "response_variance"), ("prediction_mean", "prediction_mean")):
            check(all(close(a, b) for a, b in zip(e[k], s["per_neuron"][jk])) and len(e[k]) == 10, k)
    check(len(ev.per_neuron["correlation"]) == 20 and list(ev.per_neuron["session"][10:11]) == [keys[1]], "columns")
    # numpy: the correlation over the trials' frames from 50 on (np_functions.corr, ddof 0,
    # each centred column over (std + 1e-8)) of the NeuroNormalizer's responses x * p, p = 1/std per neuron and frame
    # where std > t = 0.01 nanmean(std), else 1/t (docs/video.md)
    std = np.load(os.path.join(scan, "meta", "statistics", "responses", "all", "std.npy")).astype(np.float64)
    t = 0.01 * np.nanmean(std)
    prec = np.where(std > t, 1.0 / std, 1.0 / t)
    k = 0
    preds, resps = {0: [], 1: []}, {0: [], 1: []}
    while os.path.exists(os.path.join(ref, "%d_pred.npy" % k)):
        si, trial = np.load(os.path.join(ref, "%d_meta.npy" % k))
        p = np.load(os.path.join(ref, "%d_pred.npy" % k)).astype(np.float64)
        r = np.load(os.path.join([scan, scan2][si], "data", "responses", "%d.npy" % trial)).astype(np.float64)
        r = r * prec[:, :r.shape[1]]
        preds[si].append(p)
        resps[si].append(r[:, 50:50 + p.shape[1]])
        k += 1
    for si in (0, 1):
        p, r = np.concatenate(preds[si], 1), np.concatenate(resps[si], 1)
        pc, rc = p - p.mean(1, keepdims=True), r - r.mean(1, keepdims=True)
        corr = ((pc / (pc.std(1, keepdims=True) + 1e-8)) * (rc / (rc.std(1, keepdims=True) + 1e-8))).mean(1)
        got = ev.sessions[keys[si]]["correlations"]
        check(np.max(np.abs(got - corr)) < 1e-5, "session %d: numpy %s vs %s" % (si, corr[:3], got[:3]))
        check(np.max(np.abs(ev.sessions[keys[si]]["prediction_mean"] - p.mean(1))) < 1e-5, "prediction mean")
    check(close(npred.evaluate(m, [scan, scan2]).overall["correlation"], ev.overall["correlation"]),
          "a VideoModel; default tier oracle")
    # errors
    for fn, exc, words in ((lambda: npred.submission(model, [scan], "oracle"), npred.ArgumentError, ("path",)),
                           (lambda: npred.evaluate(model, [scan], "nope"), npred.Error, ("nope",)),
                           (lambda: npred.evaluate(model, [scan], "oracle", batch_size=8), npred.ArgumentError,
                            ("batch_size",)),
                           (lambda: npred.evaluate(model, None, "oracle"), npred.ArgumentError, ("no scans",)),
                           (lambda: npred.evaluate(model, [scan], "oracle", dataset={"frames": "x"}),
                            npred.ConfigError, ("frames",))):
        try:
            fn()
            check(False, "expected %s" % exc.__name__)
        except exc as e:
            check(all(w in str(e) for w in words), "message %r lacks %s" % (str(e), words))
    m.close()


def struct_error():
    import struct
    return struct.error


for t in (test_round_trip_kit_schema, test_empty_file_and_lists, test_many_rows_pages_row_groups,
          test_errors_name_the_file, test_reader_is_strict, test_cli_submission, test_python_submission_and_evaluate):
    run(t)
sys.exit(summary())
