"""npred.Model: create/open/save/predict/describe/positions/config for every
readout, the shifter and the modulator; predictions equal the C API's (`npred
predict`) bit for bit; errors are exceptions; no leaks over open/free cycles."""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import (CHECKPOINTS, NPRED_BIN, check, check_equal, check_raises, run, sh, skip, summary, tmpdir)

import npred

# the Gaussian readouts' arguments go only with them (another readout rejects them)
BASE = dict(layers=2, input_kern=5, hidden_kern=3, hidden_channels=4, gamma_input=1.0, gamma_readout=0.01)
GAUSS = dict(BASE, init_mu_range=0.3, init_sigma=0.1)
CORTEX = {"type": "cortex", "input_dimensions": 2, "hidden_layers": 1, "hidden_features": 6, "final_tanh": True}
CONFIGS = {
    "FullGaussian2d+shifter": dict(GAUSS, gauss_type="full", shifter=True, grid_mean_predictor=CORTEX),
    "FullFactorized2d": dict(BASE, readout_type="FullFactorized2d"),
    "Gaussian2d": dict(BASE, readout_type="Gaussian2d", init_mu_range=0.3),
    "PointPooled2d": dict(BASE, readout_type="PointPooled2d"),
    "AttentionReadout": dict(BASE, readout_type="AttentionReadout"),
    "FullGaussian2d+modulator": dict(GAUSS, modulator=True, input_channels_modulator=3),
}
SHAPE = (1, 16, 32)


def sessions(rng):
    return [dict(key="1-1-1", n_neurons=7, coords=rng.normal(size=(7, 3)), mean_activity=rng.random(7)),
            dict(key="1-1-2", n_neurons=5, coords=rng.normal(size=(5, 3)))]


def inputs(m, rng, B=5):
    x = rng.normal(size=(B,) + SHAPE).astype(np.float32)
    kw = {}
    if m.has_shifter:
        kw["pupil_center"] = rng.normal(size=(B, 2)).astype(np.float32)
    if m.behavior_channels:
        kw["behavior"] = rng.normal(size=(B, m.behavior_channels)).astype(np.float32)
    return x, kw


def test_every_model_equals_c_predict():
    """Create, save, predict: Python == `npred predict` (the C API) bit for bit, for
    every readout, with a shifter and with a modulator; a reopened model too."""
    tmp = tmpdir()
    try:
        for name, cfg in CONFIGS.items():
            rng = np.random.default_rng(len(name))
            m = npred.Model.create(cfg, SHAPE, sessions(rng), max_batch=4, seed=3)
            check(m.sessions == {"1-1-1": 7, "1-1-2": 5}, "%s sessions %s" % (name, m.sessions))
            check(m.input_shape == SHAPE, "%s input shape" % name)
            x, kw = inputs(m, rng)
            d = os.path.join(tmp, name)
            m.save(d)
            np.save(os.path.join(tmp, "x.npy"), x)
            args = [NPRED_BIN, "predict", "--model", d, "--images", os.path.join(tmp, "x.npy"), "--session",
                    "1-1-2", "--out", os.path.join(tmp, "p.npy"), "--batch", "4"]
            for k, flag in (("pupil_center", "--pupil-center"), ("behavior", "--behavior")):
                if k in kw:
                    np.save(os.path.join(tmp, k + ".npy"), kw[k])
                    args += [flag, os.path.join(tmp, k + ".npy")]
            sh(*args)
            p = m.predict(x, session="1-1-2", **kw)  # B = 5 > max_batch: chunked
            check_equal(p, np.load(os.path.join(tmp, "p.npy")), "%s: Python vs npred predict" % name)
            check(p.shape == (5, 5) and np.all(p > 0), "%s: rates (5, 5) > 0" % name)
            m2 = npred.Model.open(d)
            check_equal(m2.predict(x, session="1-1-2", **kw), p, "%s reopened" % name)
            m2.save(os.path.join(tmp, name + ".safetensors"))
            m3 = npred.Model.open(os.path.join(tmp, name + ".safetensors"))
            check_equal(m3.predict(x, session=1, **kw), p, "%s via .safetensors file" % name)
            check(m2.config == m.config, "%s: config survives save/open" % name)
            check(isinstance(m.config, dict) and "core" in m.config and "readout" in m.config, "%s config" % name)
            desc = m.describe()
            rtype = m.config["readout"]["type"]
            check(rtype in desc and "parameters" in desc, "%s: describe names %s" % (name, rtype))
            # float64 and non-contiguous inputs are converted, same result
            check_equal(m.predict(np.asfortranarray(x.astype(np.float64)), session="1-1-2", **kw), p,
                        "%s: float64 Fortran-order input" % name)
            # one image (C, H, W)
            one = {k: v[:1] for k, v in kw.items()}
            check_equal(m.predict(x[0], session="1-1-2", **one), p[:1], "%s: one image" % name)
            if rtype in ("FullGaussian2d", "Gaussian2d"):
                pos = m.positions("1-1-1")
                check(pos.shape == (7, 2) and np.all(np.abs(pos) <= 1), "%s positions %s" % (name, pos.shape))
                check_equal(m2.positions("1-1-1"), pos, "%s positions reopened" % name)
            else:
                check_raises(npred.UnsupportedError, lambda: m.positions("1-1-1"), "positions")
    finally:
        shutil.rmtree(tmp)


def test_plan_and_counts():
    """Model.plan describes and counts without parameter memory (the tutorial's
    580M-parameter factorized model); counts agree with a created model and with
    counts derived here from the layer shapes."""
    core = {"type": "Stacked2dCore", "input_channels": 1, "hidden_channels": 64, "input_kern": 9, "hidden_kern": 7,
            "layers": 4, "depth_separable": True, "stack": -1, "gamma_input": 6.3831}
    cfg = {"core": core, "readout": {"type": "FullFactorized2d", "bias": True, "normalize": True}}
    p = npred.Model.plan(cfg, (1, 144, 256), {"21067-10-18": 8372, "22846-10-16": 7344})
    c = 64
    n_core = c * 81 + 3 * ((c * c + c) * 2 + c * 49 + c) + 4 * 2 * c
    per = 144 * 256 + c + 1
    check(p.param_count("core.") == n_core, "core %d" % p.param_count("core."))
    check(p.param_count("readout.21067-10-18.") == per * 8372, "readout count")
    check(p.param_count() == n_core + per * (8372 + 7344), "total %d" % p.param_count())
    check(p.readout_repr("21067-10-18") == "FullFactorized2d (64 x 144 x 256 -> 8372) with bias, normalized",
          "repr %r" % p.readout_repr("21067-10-18"))
    check(p.core_output_shape == (64, 144, 256), "core output %s" % (p.core_output_shape,))
    check_raises(npred.ArgumentError, lambda: p.predict(np.zeros((1, 1, 144, 256)), session=0), "plan")
    rng = np.random.default_rng(7)
    for name, mcfg in CONFIGS.items():
        ss = sessions(rng)
        m = npred.Model.create(mcfg, SHAPE, ss, seed=1)
        q = npred.Model.plan(mcfg, SHAPE, ss)
        check(q.param_count() == m.param_count() and q.buffer_count == m.buffer_count, "%s: plan counts" % name)
        check(q.describe() == m.describe(), "%s: plan describes as the model" % name)
        parts = sum(m.param_count(pre) for pre in ("core.", "readout.", "shifter.", "modulator."))
        check(parts == m.param_count(), "%s: parts %d vs total %d" % (name, parts, m.param_count()))
        check(m.pupil_channels == (2 if m.has_shifter else 0), "%s: pupil channels %d" % (name, m.pupil_channels))
        check(m.readout_repr(1).endswith("-> 5) with bias") or "-> 5)" in m.readout_repr(1), "%s: repr %r"
              % (name, m.readout_repr(1)))
    npred.Model.check_config(CONFIGS["PointPooled2d"])
    check_raises(npred.ConfigError, lambda: npred.Model.check_config(dict(BASE, layerz=2)), "layerz")


def test_zero_copy_predict():
    """A C-contiguous float32 batch is passed without a copy (the library reads the
    caller's buffer): changing it changes the prediction."""
    rng = np.random.default_rng(1)
    m = npred.Model.create(CONFIGS["Gaussian2d"], SHAPE, sessions(rng), seed=1)
    x = rng.normal(size=(2,) + SHAPE).astype(np.float32)
    a = m.predict(x, session=0)
    x[1] += 1
    b = m.predict(x, session=0)
    check_equal(a[0], b[0], "unchanged row")
    check(not np.array_equal(a[1], b[1]), "changed row")


def test_errors_are_exceptions():
    rng = np.random.default_rng(2)
    m = npred.Model.create(CONFIGS["FullGaussian2d+shifter"], SHAPE, sessions(rng), seed=1)
    x = np.zeros((2,) + SHAPE, np.float32)
    pc = np.zeros((2, 2), np.float32)
    check_raises(npred.ShapeError, lambda: m.predict(np.zeros((2, 1, 8, 8)), session=0, pupil_center=pc), "(B, 1, 16, 32)")
    check_raises(npred.ArgumentError, lambda: m.predict(x, session=0), "pupil_center")
    check_raises(npred.ShapeError, lambda: m.predict(x, session=0, pupil_center=np.zeros((3, 2))), "pupil_center")
    check_raises(npred.ArgumentError, lambda: m.predict(x, session=0, pupil_center=pc, behavior=np.zeros((2, 3))),
                 "modulator")
    check_raises(npred.ArgumentError, lambda: m.predict(x, pupil_center=pc), "session")
    check_raises(npred.ArgumentError, lambda: m.predict(x, session="9-9-9", pupil_center=pc), "9-9-9")
    check_raises(npred.FileError, lambda: npred.Model.open("tests/fixtures/no-such-model"), "no-such-model")
    check_raises(npred.ConfigError, lambda: npred.Model.create(dict(BASE, no_such_key=1), SHAPE, {"a": 3}),
                 "no_such_key")
    tmp = tmpdir()
    try:
        bad = os.path.join(tmp, "bad.safetensors")
        with open(bad, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
        check_raises(npred.FormatError, lambda: npred.Model.open(bad), "bad.safetensors")
    finally:
        shutil.rmtree(tmp)
    m.close()
    check_raises(npred.ArgumentError, lambda: m.predict(x, session=0, pupil_center=pc), "closed")


def test_checkpoint_pth():
    """A published SENSORIUM checkpoint: Python == `npred predict` on the .pth."""
    pth = os.path.join(CHECKPOINTS, "sensorium_sota_model.pth")
    if not os.path.exists(pth):
        return skip("%s absent" % pth)
    m = npred.Model.open(pth, max_batch=8)
    check(len(m.sessions) >= 1 and m.input_shape == (1, 36, 64), "sessions %d, input %s" % (len(m.sessions),
                                                                                           m.input_shape))
    key = list(m.sessions)[0]
    x = np.random.default_rng(4).normal(size=(3, 1, 36, 64)).astype(np.float32)
    tmp = tmpdir()
    try:
        np.save(os.path.join(tmp, "x.npy"), x)
        sh(NPRED_BIN, "predict", "--model", pth, "--images", os.path.join(tmp, "x.npy"), "--session", key, "--out",
           os.path.join(tmp, "p.npy"))
        check_equal(m.predict(x, session=key), np.load(os.path.join(tmp, "p.npy")), "sota .pth")
    finally:
        shutil.rmtree(tmp)
    check("FullGaussian2d" in m.describe(), "describe")


def test_version():
    """npred.__version__ is the library's npred_version(), the one `npred --version` prints."""
    rc, out = sh(NPRED_BIN, "--version")
    check(npred.__version__ in out and npred.__version__.count(".") == 2, "version %r vs %r"
          % (npred.__version__, out.strip()))


def test_threads():
    """set_threads acts (per calling thread) and is checked; predictions do not depend on it."""
    rng = np.random.default_rng(6)
    m = npred.Model.create(CONFIGS["FullGaussian2d+modulator"], SHAPE, sessions(rng), seed=2)
    x, kw = inputs(m, rng, 3)
    before = npred.threads()
    try:
        npred.set_threads(1)
        check(npred.threads() == 1, "threads() %d after set_threads(1)" % npred.threads())
        a = m.predict(x, session=0, **kw)
        npred.set_threads(2)
        check(npred.threads() == 2, "threads() %d after set_threads(2)" % npred.threads())
        check_equal(m.predict(x, session=0, **kw), a, "1 vs 2 threads")
        check_raises(npred.ArgumentError, lambda: npred.set_threads(0), "threads")
    finally:
        npred.set_threads(before)


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def test_no_leak_on_repeated_open():
    """Opening, predicting with and freeing a model many times leaves the resident size flat."""
    tmp = tmpdir()
    try:
        rng = np.random.default_rng(5)
        m = npred.Model.create(CONFIGS["FullGaussian2d+shifter"], SHAPE, sessions(rng), seed=1)
        m.save(tmp)
        x, kw = inputs(m, rng, 2)

        def cycle():
            mm = npred.Model.open(tmp, max_batch=2)
            mm.predict(x, session=0, **kw)
            mm.describe()
            mm.config
        for _ in range(20):
            cycle()
        before = rss_kib()
        for _ in range(200):
            cycle()
        grown = rss_kib() - before
        check(grown < 1024, "RSS grew by %d KiB over 200 open/predict/free cycles" % grown)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    for t in (test_every_model_equals_c_predict, test_zero_copy_predict, test_errors_are_exceptions,
              test_checkpoint_pth, test_plan_and_counts, test_version, test_threads, test_no_leak_on_repeated_open):
        run(t)
    sys.exit(summary())
