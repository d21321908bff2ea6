"""npred.Dataset / npred.Loaders: the raw arrays equal the scan's .npy files, the
batches equal the C loader's bit for bit (tests/pyref.c) and the PyTorch
reference's (mini_tree fixture), errors are exceptions, no leaks."""
import ctypes
import glob
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FIXTURES, PYREF_BIN, check, check_close, check_equal, check_raises, run, sh, summary,
                     tmpdir)

import npred
from npred import _lib

MINI = os.path.join(FIXTURES, "mini_tree")
TREE = os.path.join(MINI, "static00000-1-1-GrayImageNet-test")
ZIP = TREE + ".zip"
VARIANT_A = {"batch_size": 8, "seed": None, "cuda": False, "normalize": True, "scale": 0.25,
             "include_behavior": True, "include_eye_position": True}


def test_struct_sizes():
    """The ctypes mirrors have the C sizes; the opaque buffers are large enough."""
    rc, out = sh(PYREF_BIN, "sizes")
    sizes = dict((l.split()[0], int(l.split()[1])) for l in out.splitlines() if l.strip())
    mirrors = {"npred_rng": _lib.Rng, "npred_array": _lib.Array, "npred_dataset_info": _lib.DatasetInfo,
               "npred_dataset_stats": _lib.DatasetStats, "npred_session_info": _lib.SessionInfo,
               "npred_normalizer_info": _lib.NormalizerInfo,
               "npred_batch": _lib.Batch, "npred_model_session": _lib.ModelSession,
               "npred_trainer_batch_info": _lib.TrainerBatchInfo, "npred_trainer_epoch_info": _lib.TrainerEpochInfo,
               "npred_trainer_callbacks": _lib.TrainerCallbacks, "npred_trainer_result": _lib.TrainerResult,
               "npred_eval_metrics": _lib.EvalMetrics, "npred_eval_session": _lib.EvalSession,
               "npred_eval_results": _lib.EvalResults, "npred_score": _lib.Score}
    for name, cls in mirrors.items():
        check(sizes.get(name) == ctypes.sizeof(cls), "%s: C %s bytes, ctypes %d" % (name, sizes.get(name),
                                                                                    ctypes.sizeof(cls)))
    for name, cap in (("npred_loader_config", _lib.LOADER_CONFIG_BYTES), ("npred_loader_iter", _lib.ITER_BYTES),
                      ("npred_cycler", _lib.CYCLER_BYTES), ("npred_trainer_config", _lib.TRAINER_CONFIG_BYTES)):
        check(name in sizes and sizes[name] <= cap, "%s: %s bytes > buffer %d" % (name, sizes.get(name), cap))


def test_fields_equal_files():
    """images/responses/behavior/pupil_center are the stored trials, bit for bit, from the folder and the zip."""
    for path in (TREE, ZIP):
        ds = npred.Dataset(path)
        check(ds.data_key == "00000-1-1", "data_key %s" % ds.data_key)
        check(ds.n_trials == 24 and ds.n_neurons == 10, "%d trials %d neurons" % (ds.n_trials, ds.n_neurons))
        check(ds.is_zip == path.endswith(".zip"), "is_zip")
        check(ds.image_shape == (1, 16, 32), "image shape %s" % (ds.image_shape,))
        for field in npred_fields():
            arr = ds.field(field)
            ref = np.stack([np.load(os.path.join(TREE, "data", field, "%d.npy" % i)) for i in range(24)])
            check_equal(arr, ref.astype(np.float32), "%s %s" % (path, field))
            check(not arr.flags.writeable, "%s is read-only" % field)
        check(ds.image_range == (float(ds.images.min()), float(ds.images.max())), "image range %s" %
              (ds.image_range,))


def npred_fields():
    return ("images", "responses", "behavior", "pupil_center")


def test_zero_copy():
    """The data arrays are views of the library's memory (no copy per access) that
    keep the dataset alive after the Dataset object is dropped."""
    ds = npred.Dataset(ZIP)
    a, b = ds.images, ds.images
    check(a.ctypes.data == b.ctypes.data, "two accesses share memory")
    check(not a.flags.owndata, "images does not own its data")
    ref = a.copy()
    del ds, b
    check_equal(a, ref, "images after the Dataset object is dropped")


def test_metadata():
    ds = npred.Dataset(TREE)
    for name, arr in ds.trial_info.items():
        ref = np.load(os.path.join(TREE, "meta", "trials", name + ".npy"))
        check_equal(arr, ref.astype(ref.dtype.newbyteorder("=")), "trial_info %s" % name)
    names = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(TREE, "meta", "trials", "*.npy")))
    check(sorted(ds.trial_info) == names, "trial_info names %s" % sorted(ds.trial_info))
    for name, arr in ds.neuron_info.items():
        ref = np.load(os.path.join(TREE, "meta", "neurons", name + ".npy"))
        check_equal(arr, ref.astype(ref.dtype.newbyteorder("=")), "neuron_info %s" % name)
    check(list(ds.tiers) == list(np.load(os.path.join(TREE, "meta", "trials", "tiers.npy"))), "tiers")
    check_equal(ds.image_ids, np.load(os.path.join(TREE, "meta", "trials", "frame_image_id.npy")).astype(np.int64),
                "image_ids")
    check(ds.tier_counts == {"train": 7, "validation": 7, "test": 10, "final_test": 0}, "tier counts %s"
          % ds.tier_counts)
    check(list(ds.tier_trials("validation")) == [0, 3, 7, 13, 14, 20, 23], "validation trials")
    for field in npred_fields():
        st = ds.statistics(field)
        for k, v in st.items():
            ref = np.load(os.path.join(TREE, "meta", "statistics", field, "all", k + ".npy"))
            check_equal(v, ref.astype(np.float32).reshape(v.shape), "statistics %s %s" % (field, k))
            check(v.shape == ref.shape, "statistics %s %s shape %s vs %s" % (field, k, v.shape, ref.shape))
    check(set(ds.statistics()) == set(npred_fields()), "all statistics")


def test_batches_match_reference():
    """The transformed validation/test batches equal the PyTorch static_loaders'
    within the fixture's tolerance (variant a: behaviour channels, eye position)."""
    ds = npred.Dataset(ZIP)
    case = json.load(open(os.path.join(MINI, "case.json")))
    tiers = case["variants"]["a"]["tiers"]
    for tier in ("validation", "test"):
        got = list(ds.batches(tier, **VARIANT_A))
        check(len(got) == len(tiers[tier]["batches"]), "%s: %d batches" % (tier, len(got)))
        for b, ref in zip(got, tiers[tier]["batches"]):
            check(list(b.trials) == ref["trial_indices"], "%s trials %s" % (tier, list(b.trials)))
            for field in npred_fields():
                check_close(b[field], np.load(os.path.join(MINI, ref[field])), 1e-4, 1e-5, "%s %s" % (tier, field))
    train = list(ds.batches("train", **dict(VARIANT_A, seed=3)))
    check(len(train) == 1 and sorted(train[0].trials) == tiers["train"]["trial_indices"], "train trials")


def compare_with_c(mode, tier, seed, cfg, paths):
    out = tmpdir()
    try:
        sh(PYREF_BIN, "batches", out, mode, tier, seed, json.dumps(cfg), *paths)
        keys = open(os.path.join(out, "keys.txt")).read().split()
        loaders = npred.Loaders(paths, **cfg)
        got = list(loaders.batches(tier, seed=seed) if mode == "iter" else loaders.cycle(tier, seed=seed))
        check(len(got) == len(keys) and len(keys) > 0, "%s %s: %d batches vs C %d" % (mode, tier, len(got),
                                                                                       len(keys)))
        for k, b in enumerate(got[:len(keys)]):
            check(b.data_key == keys[k], "batch %d session %s vs %s" % (k, b.data_key, keys[k]))
            for field in npred_fields() + ("trials",):
                f = os.path.join(out, "%d_%s.npy" % (k, field))
                if os.path.exists(f):
                    check_equal(b[field], np.load(f), "%s %s batch %d %s" % (mode, tier, k, field))
                else:
                    check(field not in b, "batch %d has %s, C has not" % (k, field))
    finally:
        shutil.rmtree(out)


def test_batches_equal_c_loader():
    """Same seed -> the same batches as the C loader (iterator and LongCycler), bit for bit."""
    cfg = dict(VARIANT_A, batch_size=3)
    compare_with_c("iter", "train", 11, cfg, [ZIP])
    compare_with_c("iter", "test", 0, cfg, [ZIP])
    compare_with_c("cycle", "train", 5, dict(batch_size=4, normalize=True), [ZIP, COPY])
    # a different seed gives a different train order
    a = [list(b.trials) for b in npred.Loaders([ZIP], **cfg).batches("train", seed=1)]
    b = [list(b.trials) for b in npred.Loaders([ZIP], **cfg).batches("train", seed=2)]
    check(a != b, "seeds 1 and 2 give the same order")


def test_loaders_session_get_repeats():
    L = npred.Loaders([ZIP], **VARIANT_A)
    s = L.session()
    check(s["data_key"] == "00000-1-1" and s["n_neurons"] == 10, "session %s" % s["data_key"])
    check(s["image_shape"] == (4, 4, 8), "image shape %s" % (s["image_shape"],))
    check(s["behavior_dim"] == 3 and s["pupil_dim"] == 2, "dims")
    check(list(s["tiers"]["test"]["trials"]) == [2, 5, 6, 8, 10, 11, 15, 17, 21, 22], "test trials")
    check(s["tiers"]["test"]["batches"] == 2, "test batches")
    check_equal(s["unit_ids"], np.load(os.path.join(TREE, "meta", "neurons", "unit_ids.npy")).astype(np.int64),
                "unit ids")
    b = L.get([0, 3])
    ref = next(L.batches("validation"))
    check_equal(b.images, ref.images[:2], "get == the validation batch's first rows")
    nz = L.normalizer()
    for k in ("response_precision", "behavior_precision", "eye_mean", "eye_std"):
        check_close(nz[k], np.load(os.path.join(MINI, "expected_a", "normalizer", k + ".npy")), 1e-6, 0,
                    "normalizer %s vs the PyTorch NeuroNormalizer" % k)
    check(abs(nz["inputs_mean"] - 132.7342987060547) < 1e-4 and abs(nz["inputs_std"] - 64.11860656738281) < 1e-4,
          "inputs mean/std %s %s" % (nz["inputs_mean"], nz["inputs_std"]))
    check(npred.Loaders([ZIP], batch_size=2, normalize=False).normalizer() is None, "no normalizer")
    groups = L.repeats("test")
    ids = npred.Dataset(ZIP).image_ids
    check(len(groups) == 5 and all(len(g) == 2 for g in groups), "5 images x 2 repeats")
    check(all(len(set(ids[g])) == 1 for g in groups), "one image id per group")
    check(list(ids[[g[0] for g in groups]]) == sorted(ids[[g[0] for g in groups]]), "ascending ids")


def test_errors_are_exceptions():
    check_raises(npred.FileError, lambda: npred.Dataset("tests/fixtures/no-such-scan.zip"), "no-such-scan")
    check_raises(npred.ConfigError, lambda: npred.Loaders([ZIP], batch_size=2, no_such_option=1), "no_such_option")
    check_raises(npred.ConfigError, lambda: npred.Loaders([ZIP], batch_size="x"), "batch_size")
    check_raises(npred.ArgumentError, lambda: list(npred.Dataset(ZIP).batches("nope", batch_size=2)), "nope")
    check_raises(npred.ArgumentError, lambda: npred.Dataset(ZIP).field("eyes"), "eyes")
    check_raises(npred.ArgumentError, lambda: npred.Loaders([ZIP], batch_size=2).session("x-y"), "x-y")
    bad = tmpdir()
    try:
        shutil.copytree(TREE, os.path.join(bad, "t"))
        with open(os.path.join(bad, "t", "data", "images", "3.npy"), "wb") as f:
            f.write(b"not an npy file")
        check_raises(npred.FormatError, lambda: npred.Dataset(os.path.join(bad, "t")), "3.npy")
    finally:
        shutil.rmtree(bad)
    check(issubclass(npred.FileError, OSError) and issubclass(npred.ConfigError, ValueError), "builtin bases")


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def test_no_leak_on_repeated_open():
    """Opening and freeing a dataset and loaders many times leaves the resident size flat."""
    def cycle():
        ds = npred.Dataset(ZIP)
        ds.images.sum()
        L = ds.loader(**VARIANT_A)
        for b in L.batches("test"):
            pass
        del ds, L
    for _ in range(30):
        cycle()
    before = rss_kib()
    for _ in range(200):
        cycle()
    grown = rss_kib() - before
    check(grown < 1024, "RSS grew by %d KiB over 200 open/free cycles" % grown)


def main():
    global COPY
    tmp = tmpdir()
    try:
        # a second session for the cycler: the same scan under another data_key
        COPY = os.path.join(tmp, "static00000-1-2-GrayImageNet-test")
        shutil.copytree(TREE, COPY)
        for t in (test_struct_sizes, test_fields_equal_files, test_zero_copy, test_metadata,
                  test_batches_match_reference, test_batches_equal_c_loader, test_loaders_session_get_repeats,
                  test_errors_are_exceptions, test_no_leak_on_repeated_open):
            run(t)
    finally:
        shutil.rmtree(tmp)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
