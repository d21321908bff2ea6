"""SENSORIUM 2023 (movies): a video model's per-neuron correlation on a tier and the
kit's Parquet submission file (npred/video_eval.h), on mouse_video_loader loaders of
whole trials. npred.evaluate and npred.submission call these for a VideoModel."""
import ctypes
import json
import os

import numpy as np

from . import _lib as L
from ._lib import P, c_char_p, c_double, c_int, c_int64, c_size_t, c_void_p, lib
from .video_model import VideoModel

VIDEO_LOADER_CONFIG_BYTES = 4096  # >= sizeof(npred_video_loader_config) (checked by the tests)


class VideoEvalSession(ctypes.Structure):
    _fields_ = [("data_key", c_char_p), ("n_neurons", c_int64), ("n_trials", c_int64), ("n_frames", c_int64),
                ("unit_ids", P(c_int64)), ("correlation", P(c_double)), ("response_mean", P(c_double)),
                ("response_variance", P(c_double)), ("prediction_mean", P(c_double)), ("mean_correlation", c_double)]


class VideoEvalResults(ctypes.Structure):
    _fields_ = [("tier", c_char_p), ("skip", c_int), ("n_sessions", c_int), ("sessions", P(VideoEvalSession)),
                ("n_neurons", c_int64), ("correlation", c_double)]


L._fn("npred_video_model_probe", c_int, c_char_p)
L._fn("npred_video_loader_config_init", None, c_void_p)
L._fn("npred_video_loader_config_free", None, c_void_p)
L._fn("npred_video_loader_config_parse", c_int, c_void_p, c_char_p, P(P(c_char_p)), P(c_size_t))
L._fn("npred_video_loaders_open", c_int, P(c_void_p), P(c_char_p), c_size_t, c_void_p)
L._fn("npred_video_loaders_free", None, c_void_p)
L._fn("npred_video_evaluate", c_int, c_void_p, c_void_p, c_char_p, c_void_p, P(VideoEvalResults))
L._fn("npred_video_eval_results_free", None, P(VideoEvalResults))
L._fn("npred_video_submission_open", c_int, P(c_void_p), c_char_p, c_void_p)
L._fn("npred_video_submission_add_tier", c_int, c_void_p, c_void_p, c_void_p, c_char_p, P(c_int64))
L._fn("npred_video_submission_close", c_int, c_void_p)
L._fn("npred_video_submission_abort", None, c_void_p)

PER_NEURON = ("correlation", "response_mean", "response_variance", "prediction_mean")


def is_video_model(model):
    """model is a VideoModel, or a path that holds a video model."""
    if isinstance(model, VideoModel):
        return True
    return isinstance(model, (str, bytes, os.PathLike)) and bool(lib.npred_video_model_probe(L.cstr(model)))


class _VideoLoaders:
    """mouse_video_loader loaders of whole trials (one trial per batch) as `npred eval`
    opens them for a video model: the loader arguments recorded with the model, then
    the dataset config's (dict or JSON file); data (scans) replaces its "paths"."""

    def __init__(self, m, data, dataset):
        from .data import _config_dict
        self.buf = ctypes.create_string_buffer(VIDEO_LOADER_CONFIG_BYTES)
        lib.npred_video_loader_config_init(self.buf)
        self._h = c_void_p()
        cfg = _config_dict(dataset, "dataset config")
        if data is not None:
            cfg.pop("paths", None)
        rec = lib.npred_video_model_loader_json(m._h)
        paths = []
        for text, what in ((rec, "the model's recorded loader arguments"), (json.dumps(cfg).encode(), "dataset config"),
                           (b'{"to_cut": false, "batch_size": 1}', "whole trials")):
            if text is None:
                continue
            arr, n = P(c_char_p)(), c_size_t()
            st = lib.npred_video_loader_config_parse(self.buf, text, ctypes.byref(arr), ctypes.byref(n))
            if what == "dataset config":
                paths = [arr[i].decode() for i in range(n.value)]
            lib.npred_loader_paths_free(arr, n)
            if st:
                raise L.error(st, what)
        if data is not None:
            paths = [data] if isinstance(data, (str, bytes, os.PathLike)) else list(data)
        if not paths:
            raise L.ArgumentError("no scans: give data or \"paths\" in the dataset config", "invalid argument", 6)
        self.paths = [os.fspath(p) for p in paths]
        c_paths = (c_char_p * len(self.paths))(*[L.cstr(p) for p in self.paths])
        L.check(lib.npred_video_loaders_open(ctypes.byref(self._h), c_paths, len(self.paths), self.buf))

    def __del__(self):
        if getattr(self, "_h", None):
            lib.npred_video_loaders_free(self._h)
            self._h = c_void_p()
        if getattr(self, "buf", None) is not None:
            lib.npred_video_loader_config_free(self.buf)
            self.buf = None


class VideoEvaluation:
    """npred.evaluate's result for a video model (the 2023 kit's get_correlations on
    whole trials, frames from `skip` on):

    overall      n_neurons, correlation (the kit's number: the mean over all neurons)
    sessions     {data_key: n_neurons, n_trials, scored_frames, correlation (the
                 session's mean), and per-neuron arrays unit_ids, correlations,
                 response_mean, response_variance, prediction_mean}
    per_neuron   columns over all sessions' neurons: session, unit_id, correlation,
                 response_mean, response_variance, prediction_mean, scored_frames
    to_dataframe()  per_neuron as a pandas DataFrame (needs pandas)"""

    def __init__(self, tier, skip, sessions, overall, per_neuron):
        self.tier, self.skip, self.sessions, self.overall, self.per_neuron = tier, skip, sessions, overall, per_neuron

    def to_dataframe(self):
        import pandas as pd
        return pd.DataFrame(self.per_neuron)

    def __repr__(self):
        return "npred.VideoEvaluation(%s: %d neurons, correlation %.4f)" % (self.tier, self.overall["n_neurons"],
                                                                           self.overall["correlation"])


def _open(model):
    own = not isinstance(model, VideoModel)
    return (VideoModel.open(model, max_batch=1) if own else model), own


def evaluate(model, data, tier, dataset):
    m, own = _open(model)
    try:
        loaders = _VideoLoaders(m, data, dataset)
        res = VideoEvalResults()
        try:
            L.check(lib.npred_video_evaluate(m._h, loaders._h, L.cstr(tier), None, ctypes.byref(res)), "evaluate")
            sessions, cols = {}, {k: [] for k in ("session", "unit_id") + PER_NEURON + ("scored_frames",)}
            for s in range(res.n_sessions):
                e = res.sessions[s]
                key, n = e.data_key.decode(), e.n_neurons
                d = {"n_neurons": n, "n_trials": e.n_trials, "scored_frames": e.n_frames,
                     "correlation": e.mean_correlation,
                     "unit_ids": L.copy_out(e.unit_ids, (n,), c_int64, np.int64)}
                for k in PER_NEURON:
                    d[k if k != "correlation" else "correlations"] = L.copy_out(getattr(e, k), (n,), c_double,
                                                                                np.float64)
                    cols[k].append(d[k if k != "correlation" else "correlations"])
                cols["session"].append(np.array([key] * n))
                cols["unit_id"].append(d["unit_ids"])
                cols["scored_frames"].append(np.full(n, e.n_frames, np.int64))
                sessions[key] = d
            per_neuron = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
            return VideoEvaluation(res.tier.decode(), res.skip, sessions,
                                   {"n_neurons": res.n_neurons, "correlation": res.correlation}, per_neuron)
        finally:
            lib.npred_video_eval_results_free(ctypes.byref(res))
    finally:
        if own:
            m.close()


def submission(model, data, tier, dataset, path):
    if path is None:
        raise L.ArgumentError("submission: a video model's submission is a Parquet file: give path",
                              "invalid argument", 6)
    m, own = _open(model)
    try:
        loaders = _VideoLoaders(m, data, dataset)
        sub, rows = c_void_p(), c_int64()
        L.check(lib.npred_video_submission_open(ctypes.byref(sub), L.cstr(os.fspath(path)), None), "submission")
        try:
            L.check(lib.npred_video_submission_add_tier(sub, m._h, loaders._h, L.cstr(tier), ctypes.byref(rows)),
                    "submission")
        except BaseException:
            lib.npred_video_submission_abort(sub)
            raise
        L.check(lib.npred_video_submission_close(sub), "submission")
        return rows.value
    finally:
        if own:
            m.close()
