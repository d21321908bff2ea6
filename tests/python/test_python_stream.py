"""npred.VideoModel and npred.Stream (python/npred/video_stream.py): a GRU model and a
factorised 3D model built with VideoModel.create; every clip pushed frame by frame
equals VideoModel.predict of the clip bit for bit (None during the 3D warm-up);
save -> load -> stream; bad frames are errors."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from harness import check, check_equal, run, summary, tmpdir

import npred

GRU = {"seed": 3, "core_type": "2D", "core_dict": {"input_channels": 1, "hidden_channels": 4, "input_kern": 5,
       "hidden_kern": 3, "layers": 2, "gamma_input": 0.1, "skip": 0, "final_nonlinearity": True, "bias": False,
       "momentum": 0.9, "pad_input": False, "batch_norm": True, "hidden_dilation": 1, "laplace_padding": None,
       "input_regularizer": "LaplaceL2norm", "stack": -1, "depth_separable": True, "linear": False,
       "attention_conv": False, "hidden_padding": None, "use_avg_reg": False},
       "readout_type": "gaussian", "readout_dict": {"bias": True, "init_mu_range": 0.2, "init_sigma": 1.0,
       "gamma_readout": 0.0, "gauss_type": "full", "grid_mean_predictor": None},
       "use_gru": True, "gru_dict": {"input_channels": 4, "rec_channels": 4, "input_kern": 3, "rec_kern": 3,
       "gamma_rec": 0}, "use_shifter": True, "shifter_type": "MLP",
       "shifter_dict": {"shift_layers": 2, "hidden_channels_shifter": 4}}

F3D = {"seed": 5, "core_type": "3D_factorised", "core_dict": {"input_channels": 1, "hidden_channels": 3,
       "spatial_input_kernel": [5, 5], "temporal_input_kernel": 3, "spatial_hidden_kernel": [3, 3],
       "temporal_hidden_kernel": 4, "layers": 2, "padding": False},
       "readout_type": "gaussian", "readout_dict": {"grid_mean_predictor": None}, "use_gru": False,
       "use_shifter": False}


def clips(rng, B, T, shape):
    return rng.standard_normal((B, shape[0], T) + tuple(shape[1:])).astype(np.float32), \
        (0.3 * rng.standard_normal((B, 2, T))).astype(np.float32)


def stream_equals_predict(m, session, videos, pupil):
    want = m.predict(videos, session, pupil if m.has_shifter else None)
    s = npred.Stream(m, session)
    W = s.warmup_frames
    check(W == m.temporal_cutoff, "warm-up %d, cut-off %d" % (W, m.temporal_cutoff))
    for b in range(videos.shape[0]):
        s.reset()
        got = []
        for t in range(videos.shape[2]):
            r = s.push(videos[b, :, t], pupil[b, :, t] if m.has_shifter else None)
            if t < W:
                check(r is None, "push %d of the warm-up gave rates" % t)
            else:
                got.append(r)
        check_equal(np.stack(got), want[b], "clip %d streamed vs predict" % b)
    check(s.frames_pushed == videos.shape[2], "frames pushed %d" % s.frames_pushed)


def test_gru():
    rng = np.random.default_rng(1)
    m = npred.VideoModel.create(GRU, (1, 12, 16), [("a", 9), ("b", 5)], max_batch=2)
    v, p = clips(rng, 2, 7, (1, 12, 16))
    for k in ("a", "b"):
        stream_equals_predict(m, k, v, p)
    d = tmpdir()
    m.save(d)
    m2 = npred.VideoModel.load(d)
    stream_equals_predict(m2, "b", v, p)
    s = npred.Stream(m2, "a")
    for bad in (np.zeros((1, 12, 15), np.float32), np.zeros((2, 12, 16), np.float32)):
        try:
            s.push(bad, np.zeros(2))
            check(False, "a frame of %s was accepted" % (bad.shape,))
        except npred.ShapeError as e:
            check("frame" in str(e), str(e))
    try:
        s.push(np.zeros((1, 12, 16), np.float32))
        check(False, "no pupil_center with a shifter was accepted")
    except npred.ArgumentError as e:
        check("pupil_center" in str(e), str(e))


def test_factorized3d():
    rng = np.random.default_rng(2)
    m = npred.VideoModel.create(F3D, (1, 14, 18), [("a", 6)], max_batch=3)
    check(m.temporal_cutoff == 5, "cut-off %d (2 + 3)" % m.temporal_cutoff)
    v, p = clips(rng, 3, 11, (1, 14, 18))
    stream_equals_predict(m, "a", v, p)


run(test_gru)
run(test_factorized3d)
sys.exit(summary())
