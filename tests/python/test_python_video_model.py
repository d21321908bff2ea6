"""npred.VideoModel: create on the mini_movie_tree scan's neurons, predict, save,
open; predictions equal the C API's (tests/pyref.c video-predict) bit for bit;
getters; errors are exceptions; import_pth of a torch-written .pth."""
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import FIXTURES, PYREF_BIN, check, check_close, check_equal, check_raises, run, sh, summary, tmpdir

import npred

SCAN = os.path.join(FIXTURES, "mini_movie_tree", "dynamic00000-1-1-Video-0123456789abcdef0123456789abcdef")
KEY = os.path.basename(SCAN)
CORTEX = {"type": "cortex", "input_dimensions": 2, "hidden_layers": 1, "hidden_features": 10, "final_tanh": True}
READOUT = {"bias": True, "init_mu_range": 0.2, "init_sigma": 1.0, "gamma_readout": 0.1, "gauss_type": "full",
           "grid_mean_predictor": CORTEX}
CONFIGS = {
    "3D_factorised": {"seed": 5, "core_type": "3D_factorised",
                      "core_dict": {"input_channels": 3, "hidden_channels": 4, "spatial_input_kernel": [5, 5],
                                    "temporal_input_kernel": 3, "spatial_hidden_kernel": [3, 3],
                                    "temporal_hidden_kernel": 3, "layers": 2, "padding": True},
                      "readout_type": "gaussian", "readout_dict": READOUT, "use_gru": False, "use_shifter": True,
                      "shifter_type": "MLP", "shifter_dict": {"shift_layers": 3, "hidden_channels_shifter": 5}},
    "2D+GRU": {"seed": 6, "core_type": "2D",
               "core_dict": {"input_channels": 3, "hidden_channels": 4, "input_kern": 5, "hidden_kern": 3,
                             "layers": 2, "pad_input": True, "stack": -1},
               "readout_type": "gaussian", "readout_dict": READOUT, "use_gru": True,
               "gru_dict": {"input_channels": 4, "rec_channels": 6, "input_kern": 3, "rec_kern": 3},
               "use_shifter": False},
}


def sessions():
    coords = np.load(os.path.join(SCAN, "meta", "neurons", "cell_motor_coordinates.npy"))
    return [{"key": KEY, "n_neurons": coords.shape[0], "coords": coords, "mean_activity": np.linspace(0.1, 1, 10)}]


def test_equals_c_api():
    """Python predict == the C API's (pyref video-predict on the saved model) bit for
    bit, for a 3D core with a shifter and a 2D core with a GRU; a reopened model too."""
    tmp = tmpdir()
    try:
        for name, cfg in CONFIGS.items():
            m = npred.VideoModel.create(cfg, (3, 12, 16), sessions(), max_batch=2)
            check(m.sessions == {KEY: 10}, "%s sessions %s" % (name, m.sessions))
            check(m.input_shape == (3, 12, 16), "%s input shape" % name)
            cut = 4 if name == "3D_factorised" else 0
            check(m.temporal_cutoff == cut and m.output_frames(11) == 11 - cut, "%s cut-off" % name)
            check(m.has_shifter == (name == "3D_factorised") and m.uses_gru == (name == "2D+GRU"), "%s parts" % name)
            check(m.core_type == cfg["core_type"] and m.config["seed"] == cfg["seed"], "%s config" % name)
            rng = np.random.default_rng(len(name))
            x = rng.normal(size=(3, 3, 11, 12, 16)).astype(np.float32)
            pc = rng.normal(size=(3, 2, 11)).astype(np.float32) if m.has_shifter else None
            r = m.predict(x, session=KEY, pupil_center=pc)
            check(r.shape == (3, 11 - cut, 10) and r.dtype == np.float32 and np.all(r > 0), "%s rates" % name)
            d = os.path.join(tmp, name)
            m.loader = {"batch_size": 2, "frames": 11}
            m.save(d)
            np.save(os.path.join(tmp, "x.npy"), x)
            args = [PYREF_BIN, "video-predict", tmp, d, KEY, os.path.join(tmp, "x.npy")]
            if pc is not None:
                np.save(os.path.join(tmp, "pc.npy"), pc)
                args.append(os.path.join(tmp, "pc.npy"))
            rc, out = sh(*args)
            if check(rc == 0, "%s: pyref video-predict: %s" % (name, out)):
                check_equal(r, np.load(os.path.join(tmp, "rates.npy")), "%s: Python vs C API" % name)
            m2 = npred.VideoModel.open(d)
            check_equal(m2.predict(x, pupil_center=pc), r, "%s: reopened" % name)
            check(m2.loader == {"batch_size": 2, "frames": 11}, "%s: loader record %s" % (name, m2.loader))
            one = m2.predict(x[1], pupil_center=None if pc is None else pc[1])
            check_equal(one, r[1], "%s: one clip" % name)
            check(KEY in m2.describe(), "%s describe" % name)
            m.close()
            m2.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_struct_size():
    """The ctypes mirrors of npred_video_model_session and the video evaluation's structs
    have the C sizes; the video loader config's buffer is large enough."""
    import ctypes
    from npred import video_eval
    from npred.video_model import VideoModelSession
    rc, out = sh(PYREF_BIN, "sizes")
    sizes = dict((l.split()[0], int(l.split()[1])) for l in out.splitlines() if l.strip())
    for name, cls in (("npred_video_model_session", VideoModelSession),
                      ("npred_video_eval_session", video_eval.VideoEvalSession),
                      ("npred_video_eval_results", video_eval.VideoEvalResults)):
        check(sizes.get(name) == ctypes.sizeof(cls), "%s: C %s bytes, ctypes %d" % (name, sizes.get(name),
                                                                                   ctypes.sizeof(cls)))
    n = sizes.get("npred_video_loader_config")
    check(n is not None and n <= video_eval.VIDEO_LOADER_CONFIG_BYTES, "npred_video_loader_config: %s bytes" % n)


def test_errors():
    m = npred.VideoModel.create(CONFIGS["3D_factorised"], (3, 12, 16), sessions())
    x = np.zeros((1, 3, 8, 12, 16), np.float32)
    pc = np.zeros((1, 2, 8), np.float32)
    check_raises(npred.ArgumentError, lambda: m.predict(x, session="nope", pupil_center=pc), "unknown session")
    check_raises(npred.ArgumentError, lambda: m.predict(x), "pupil_center")
    check_raises(npred.ShapeError, lambda: m.predict(np.zeros((1, 3, 8, 10, 16), np.float32), pupil_center=pc),
                 "the model takes")
    check_raises(npred.ShapeError, lambda: m.predict(x[:, :, :4], pupil_center=pc[:, :, :4]), "at least 5")
    bad = dict(CONFIGS["3D_factorised"])
    del bad["seed"]
    check_raises(npred.ConfigError, lambda: npred.VideoModel.create(bad, (3, 12, 16), sessions()), "seed")
    check_raises(npred.FileError, lambda: npred.VideoModel.open("/nonexistent/run"), "nonexistent")
    m.close()


def test_import_pth():
    """VideoModel.import_pth on the torch-written .pth of the GRU encoder fixture
    (tests/fixtures/video_pth/): both sessions predict the fixture's eval outputs within
    its tolerance; sessions that are not the file's and a config without its GRU raise."""
    import json
    case = os.path.join(FIXTURES, "video_gru_encoder")
    with open(os.path.join(case, "case.json")) as f:
        c = json.load(f)
    cfg = c["args"]["make_video_model"]
    tol = c["tolerance"]["forward"]
    pth = os.path.join(FIXTURES, "video_pth", "video_gru_encoder.pth")
    m = npred.VideoModel.import_pth(pth, cfg, frame_size=(12, 16))
    check(m.sessions == dict((k, c["args"]["n_neurons"][k]) for k in c["data_keys"]), "sessions %s" % m.sessions)
    for k in c["data_keys"]:
        files = c["files"]["sessions"][k]
        x = np.load(os.path.join(case, files["inputs"]["videos"]))
        pc = np.load(os.path.join(case, files["inputs"]["pupil_center"]))
        want = np.load(os.path.join(case, files["output_eval"]))
        check_close(m.predict(x, session=k, pupil_center=pc), want, tol["rtol"], tol["atol"], "%s: eval output" % k)
    m.close()
    order = list(reversed(c["data_keys"]))
    m = npred.VideoModel.import_pth(pth, json.dumps(cfg), (12, 16), [(k, 5) for k in order])
    check(list(m.sessions) == order, "given order %s" % list(m.sessions))
    m.close()
    check_raises(npred.ShapeError, lambda: npred.VideoModel.import_pth(pth, cfg, (12, 16), [(order[0], 5)]),
                 "not among the 1 given")
    check_raises(npred.ShapeError, lambda: npred.VideoModel.import_pth(pth, dict(cfg, use_gru=False), (12, 16)),
                 "use_gru false")


if __name__ == "__main__":
    for t in (test_struct_size, test_equals_c_api, test_errors, test_import_pth):
        run(t)
    sys.exit(summary())
