"""npred.Model.input_gradient, npred.mei, npred.rf, npred.tuning: the input gradient
against central finite differences of predict (double precision differences of the
float model), rf against input_gradient, MEIs against predict, tuning responses
against predict on gratings built here; errors are exceptions."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, check_close, check_equal, check_raises, run, summary

import npred

CFG = {"layers": 2, "input_kern": 5, "hidden_kern": 3, "hidden_channels": 4, "gamma_input": 1.0,
       "init_mu_range": 0.3, "init_sigma": 0.1, "shifter": True}
SHAPE = (1, 12, 20)


def model():
    rng = np.random.default_rng(1)
    return npred.Model.create(CFG, SHAPE, [{"key": "5-1-1", "n_neurons": 6, "coords": rng.normal(size=(6, 3))}],
                              max_batch=4, seed=2)


def test_input_gradient_finite_differences():
    m = model()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2,) + SHAPE).astype(np.float32)
    pc = rng.normal(size=(2, 2)).astype(np.float32) * 0.3
    w = rng.normal(size=(2, 6)).astype(np.float32)
    g, r = m.input_gradient(x, pupil_center=pc, weights=w)
    check(g.shape == x.shape and r.shape == (2, 6), "shapes %s %s" % (g.shape, r.shape))
    check_equal(r, m.predict(x, pupil_center=pc), "rates == predict")
    # central differences of the objective on the pixels with the largest gradients
    for b in range(2):
        flat = np.argsort(-np.abs(g[b]).ravel())[:6]
        for p in flat:
            eps = 1e-2
            xp, xm = x.copy(), x.copy()
            xp[b].ravel()[p] += eps
            xm[b].ravel()[p] -= eps
            fp = float(np.dot(m.predict(xp[b:b + 1], pupil_center=pc[b:b + 1])[0].astype(np.float64), w[b]))
            fm = float(np.dot(m.predict(xm[b:b + 1], pupil_center=pc[b:b + 1])[0].astype(np.float64), w[b]))
            fd = (fp - fm) / (2 * eps)
            got = float(g[b].ravel()[p])
            check(abs(got - fd) <= 2e-3 + 2e-2 * abs(fd), "image %d pixel %d: gradient %g vs finite difference %g"
                  % (b, p, got, fd))
    # a one-hot row is that neuron's gradient; ones = the population
    g1, _ = m.input_gradient(x[:1], pupil_center=pc[:1], weights=np.eye(6, dtype=np.float32)[2:3])
    gall, _ = m.input_gradient(x[:1], pupil_center=pc[:1])
    parts = sum(m.input_gradient(x[:1], pupil_center=pc[:1], weights=np.eye(6, dtype=np.float32)[j:j + 1])[0]
                for j in range(6))
    check_close(gall, parts, 1e-4, 1e-6, "ones = sum of one-hot gradients")
    check(np.abs(g1).max() > 0, "one neuron's gradient is non-zero")


def test_rf_equals_input_gradient():
    m = model()
    pc = np.array([0.1, -0.2], np.float32)
    res = npred.rf(m, neurons=[0, 3], gray=0.0, pupil_center=pc)
    check(res["maps"].shape == (2,) + SHAPE and res["centre"].shape == (2, 2), "rf shapes")
    x = np.zeros((2,) + SHAPE, np.float32)
    w = np.zeros((2, 6), np.float32)
    w[0, 0] = w[1, 3] = 1
    g, _ = m.input_gradient(x, weights=w, pupil_center=np.stack([pc, pc]))
    check_close(res["maps"], g, 1e-5, 1e-8, "rf maps == input gradient at gray")
    c = res["centre"]
    check(np.all((c[:, 0] >= 0) & (c[:, 0] <= SHAPE[2] - 1) & (c[:, 1] >= 0) & (c[:, 1] <= SHAPE[1] - 1)),
          "centres inside the image: %s" % c)
    check(np.all(res["size"] > 0), "sizes %s" % res["size"])


def test_mei():
    m = model()
    pc = np.array([0.0, 0.0], np.float32)
    cfg = {"optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 1.0}},
           "postprocessing": {"path": "mei.legacy.ops.ChangeNorm", "kwargs": {"norm": 5.0}},
           "stopper": {"path": "mei.stoppers.NumIterations", "kwargs": {"num_iterations": 15}}, "seed": 4}
    calls = []
    res = npred.mei(m, neurons=[1, 4], config=cfg, pupil_center=pc, progress=lambda d, t: calls.append((d, t)))
    meis, act, trace = res["meis"], res["activations"], res["trace"]
    check(meis.shape == (2,) + SHAPE and act.shape == (2,), "shapes")
    check(trace.shape == (16, 2), "trace %s (15 iterations = 16 steps)" % (trace.shape,))
    check(np.all(trace[-1] > trace[0]), "objective rose: %s -> %s" % (trace[0], trace[-1]))
    norms = np.sqrt((meis.astype(np.float64) ** 2).reshape(2, -1).sum(1))
    check_close(norms, [5.0, 5.0], 1e-4, 0, "ChangeNorm 5")
    rates = m.predict(meis, pupil_center=np.stack([pc, pc]))
    check_close(act, [rates[0, 1], rates[1, 4]], 1e-5, 1e-6, "activations == predict(meis)")
    check(len(calls) > 0 and calls[-1][0] == calls[-1][1], "progress %s" % calls[-1:])
    again = npred.mei(m, objective=np.eye(6, dtype=np.float32)[[1, 4]], config=cfg, pupil_center=pc)
    check_equal(again["meis"], meis, "same seed, objective rows == neurons: identical")
    check_raises(npred.ConfigError, lambda: npred.mei(m, neurons=[0], config={"optimiser": {}}, pupil_center=pc),
                 "optimiser")
    check_raises(npred.ArgumentError, lambda: npred.mei(m, neurons=[6], pupil_center=pc), "neurons")
    check_raises(npred.ShapeError, lambda: npred.mei(m, objective=np.ones((1, 5)), pupil_center=pc), "objective")

    class Stop(Exception):
        pass

    def stop(d, t):
        raise Stop()
    check_raises(Stop, lambda: npred.mei(m, neurons=[0], config=cfg, pupil_center=pc, progress=stop))


def test_tuning():
    m = model()
    pc = np.array([0.0, 0.0], np.float32)
    res = npred.tuning(m, neurons=[0, 2, 5], pupil_center=pc, n_ori=12, n_sf=8, n_phase=8)
    for k in ("orientation", "spatial_frequency", "osi", "f1_f0", "peak_rate"):
        check(res[k].shape == (3,) and np.all(np.isfinite(res[k])), "%s %s" % (k, res[k]))
    check(np.all((res["orientation"] >= 0) & (res["orientation"] < np.pi)), "orientation in [0, pi)")
    check(set(res["spatial_frequency"]) <= set(res["spatial_frequencies"]), "preferred SF on the grid")
    R = res["responses"]
    check(R.shape == (12 * 8 * 8, 3), "responses %s" % (R.shape,))
    check_close(res["peak_rate"], R.max(0), 1e-6, 0, "peak = max response")
    # the gratings rebuilt here: gray + contrast cos(2 pi f (x cos t + y sin t) + phase) in channel 0
    H, W = SHAPE[1:]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    imgs = []
    for t in res["orientations"]:
        for f in res["spatial_frequencies"]:
            for p in range(8):
                imgs.append(np.cos(2 * np.pi * f * (xx * np.cos(t) + yy * np.sin(t)) + 2 * np.pi * p / 8))
    x = np.array(imgs, np.float32)[:, None]
    pred = m.predict(x, pupil_center=np.tile(pc, (len(x), 1)))[:, [0, 2, 5]]
    check_close(R, pred, 1e-4, 1e-5, "responses == predict on the gratings")
    check_raises(npred.ArgumentError, lambda: npred.tuning(m, neurons=[0], pupil_center=pc, n_orientations=4),
                 "n_orientations")


def test_errors():
    m = model()
    x = np.zeros((2,) + SHAPE, np.float32)
    pc = np.zeros((2, 2), np.float32)
    check_raises(npred.ShapeError, lambda: m.input_gradient(x, pupil_center=pc, weights=np.ones((2, 5))), "weights")
    check_raises(npred.ArgumentError, lambda: m.input_gradient(x), "pupil_center")
    check_raises(npred.ArgumentError, lambda: npred.rf(m, neurons=[-1], pupil_center=pc[0]), "neurons")
    check_raises(npred.ShapeError, lambda: npred.rf(m, neurons=[0], pupil_center=[1, 2, 3]), "pupil_center")


if __name__ == "__main__":
    for t in (test_input_gradient_finite_differences, test_rf_equals_input_gradient, test_mei, test_tuning,
              test_errors):
        run(t)
    sys.exit(summary())
