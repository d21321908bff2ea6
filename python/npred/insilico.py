"""In-silico experiments (npred/insilico.h): input gradients, MEIs, gradient
receptive fields, grating tuning. Bound at first use, so the package also loads
with a library built without them (the call then raises UnsupportedError)."""
import ctypes
import json
import os

import numpy as np

from . import _lib as L
from ._lib import P, c_char_p, c_double, c_float, c_int, c_uint64, c_void_p, lib

PROGRESS = ctypes.CFUNCTYPE(c_int, c_void_p, c_int, c_int)
MEI_CONFIG_BYTES = 1024


class TuningConfig(ctypes.Structure):
    _fields_ = [("n_ori", c_int), ("n_sf", c_int), ("n_phase", c_int), ("sf_min", c_double), ("sf_max", c_double),
                ("contrast", c_float), ("gray", c_float)]


class TuningResult(ctypes.Structure):
    _fields_ = [("orientation", c_double), ("spatial_frequency", c_double), ("osi", c_double), ("f1_f0", c_double),
                ("peak_rate", c_double)]


_PROTOS = {
    "npred_model_input_gradient": (c_int, [c_void_p, c_char_p, P(c_float), c_int, P(c_float), P(c_float), P(c_float),
                                           P(c_float), P(c_float)]),
    "npred_mei_config_default": (None, [c_void_p]),
    "npred_mei_config_parse": (c_int, [c_void_p, c_char_p, c_char_p]),
    "npred_mei_config_validate": (c_int, [c_void_p]),
    "npred_mei_max_steps": (c_int, [c_void_p]),
    "npred_mei_optimize": (c_int, [c_void_p, c_char_p, c_void_p, P(c_float), c_int, P(c_float), P(c_float),
                                   P(c_float), P(c_float), P(c_float), P(c_float), P(c_int), PROGRESS, c_void_p]),
    "npred_rf_gradient": (c_int, [c_void_p, c_char_p, P(c_int), c_int, c_float, P(c_float), P(c_float), P(c_float),
                                  PROGRESS, c_void_p]),
    "npred_rf_stats": (None, [P(c_float), c_int, c_int, c_int, c_int, P(c_float), P(c_float)]),
    "npred_tuning_config_default": (None, [P(TuningConfig)]),
    "npred_tuning_run": (c_int, [c_void_p, c_char_p, P(TuningConfig), P(c_int), c_int, P(c_float), P(c_float),
                                 P(TuningResult), P(c_float), PROGRESS, c_void_p]),
    "npred_tuning_sf": (c_double, [P(TuningConfig), c_int]),
}
_bound = {}


def fn(name):
    """The library function `name` with its prototype (UnsupportedError if absent)."""
    if name not in _bound:
        try:
            f = getattr(lib, name)
        except AttributeError:
            raise L.UnsupportedError("%s: this libnpred has no %s" % (L.lib_path, name), "unsupported", 8) from None
        f.restype, f.argtypes = _PROTOS[name]
        _bound[name] = f
    return _bound[name]


def _progress(progress, errors):
    def call(user, done, total):
        if progress is None or errors:
            return 1 if errors else 0
        try:
            progress(done, total)
            return 0
        except BaseException as e:
            errors.append(e)
            return 1
    return PROGRESS(call)


def _neurons(model, i, neurons):
    n = L.lib.npred_model_session_neurons(model._h, i)
    idx = np.arange(n) if neurons is None else np.atleast_1d(np.asarray(neurons))
    if idx.dtype.kind not in "iu" or idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= n:
        raise L.ArgumentError("neurons: expected indices in [0, %d), got %r" % (n, neurons), "invalid argument", 6)
    return np.ascontiguousarray(idx, dtype=np.int32)


def _one(model, name, v, dim):
    """pupil_center / behavior for the in-silico calls: one vector used for every image."""
    if v is None:
        return None
    a = L.as_f32(v, name).reshape(-1)
    if a.shape[0] != dim:
        raise L.ShapeError("%s: expected %d values, got %d" % (name, dim, a.shape[0]), "shape error", 3)
    return a


def input_gradient(model, images, session=None, weights=None, pupil_center=None, behavior=None):
    """d(sum_j weights[b, j] * rate[b, j]) / d images[b] for every image b (eval mode),
    and the rates: returns (gradient (B, C, H, W), rates (B, n)). weights (B, n)
    defaults to all ones (the population sum)."""
    i = model._session(session)
    x, pc, bh = model._inputs(images, pupil_center, behavior)
    B = x.shape[0]
    n = L.lib.npred_model_session_neurons(model._h, i)
    w = np.ones((B, n), np.float32) if weights is None else L.as_f32(weights, "weights")
    if w.shape != (B, n):
        raise L.ShapeError("weights: expected (%d, %d), got %s" % (B, n, w.shape), "shape error", 3)
    grad = np.empty_like(x)
    rates = np.empty((B, n), np.float32)
    key = L.lib.npred_model_session_key(model._h, i)
    if B:
        L.check(fn("npred_model_input_gradient")(model._h, key, L.fptr(x), B, L.fptr(pc), L.fptr(bh), L.fptr(w),
                                                 L.fptr(grad), L.fptr(rates)))
    return grad, rates


def mei(model, session=None, neurons=None, objective=None, config=None, initial=None, pupil_center=None,
        behavior=None, progress=None):
    """Most exciting inputs by gradient ascent (sinzlab/mei's gradient_ascent; see
    docs/insilico.md). One image per listed neuron (neurons: indices, default all),
    or one per row of objective (N, n) weights over the session's neurons. config:
    a sinzlab/mei-style dict or JSON file (None: npred's defaults). Returns a dict:
    meis (N, C, H, W), activations (N,), trace (steps, N) of the objective."""
    from .model import Model
    if not isinstance(model, Model):
        raise L.ArgumentError("mei: model must be an npred.Model", "invalid argument", 6)
    i = model._session(session)
    n = L.lib.npred_model_session_neurons(model._h, i)
    if objective is None:
        idx = _neurons(model, i, neurons)
        obj = np.zeros((len(idx), n), np.float32)
        obj[np.arange(len(idx)), idx] = 1
    else:
        if neurons is not None:
            raise L.ArgumentError("mei: give neurons or objective, not both", "invalid argument", 6)
        obj = L.as_f32(objective, "objective")
        if obj.ndim == 1:
            obj = obj[None]
        if obj.ndim != 2 or obj.shape[1] != n:
            raise L.ShapeError("objective: expected (N, %d), got %s" % (n, obj.shape), "shape error", 3)
    N = obj.shape[0]
    cfg = ctypes.create_string_buffer(MEI_CONFIG_BYTES)
    fn("npred_mei_config_default")(cfg)
    if config is not None:
        if isinstance(config, dict):
            text, where = json.dumps(config), "mei config"
        else:
            where = os.fspath(config)
            with open(where) as f:
                text = f.read()
        L.check(fn("npred_mei_config_parse")(cfg, text.encode(), where.encode()))
    L.check(fn("npred_mei_config_validate")(cfg))
    c, h, w = model.input_shape
    init = None
    if initial is not None:
        init = L.as_f32(initial, "initial")
        if init.shape != (N, c, h, w):
            raise L.ShapeError("initial: expected %s, got %s" % ((N, c, h, w), init.shape), "shape error", 3)
    pc = _one(model, "pupil_center", pupil_center, 2)
    bh = _one(model, "behavior", behavior, model.behavior_channels)
    steps = fn("npred_mei_max_steps")(cfg)
    meis = np.empty((N, c, h, w), np.float32)
    act = np.empty(N, np.float32)
    trace = np.full((steps, N), np.nan, np.float32)
    done = c_int(0)
    errors = []
    st = fn("npred_mei_optimize")(model._h, L.lib.npred_model_session_key(model._h, i), cfg, L.fptr(obj), N,
                                  L.fptr(init), L.fptr(pc), L.fptr(bh), L.fptr(meis), L.fptr(act), L.fptr(trace),
                                  ctypes.byref(done), _progress(progress, errors), None)
    if errors:
        raise errors[0]
    L.check(st, "mei")
    return {"meis": meis, "activations": act, "trace": trace[:done.value]}


def rf(model, session=None, neurons=None, gray=0.0, pupil_center=None, behavior=None, progress=None):
    """Gradient receptive fields d rate / d image at a uniform image of value gray:
    returns a dict with maps (count, C, H, W), centre (count, 2) x, y in pixels and
    size (count,), for the listed neurons (default all)."""
    i = model._session(session)
    idx = _neurons(model, i, neurons)
    c, h, w = model.input_shape
    maps = np.empty((len(idx), c, h, w), np.float32)
    pc = _one(model, "pupil_center", pupil_center, 2)
    bh = _one(model, "behavior", behavior, model.behavior_channels)
    errors = []
    st = fn("npred_rf_gradient")(model._h, L.lib.npred_model_session_key(model._h, i),
                                 idx.ctypes.data_as(P(c_int)), len(idx), float(gray), L.fptr(pc), L.fptr(bh),
                                 L.fptr(maps), _progress(progress, errors), None)
    if errors:
        raise errors[0]
    L.check(st, "rf")
    centre = np.empty((len(idx), 2), np.float32)
    size = np.empty(len(idx), np.float32)
    fn("npred_rf_stats")(L.fptr(maps), len(idx), c, h, w, L.fptr(centre), L.fptr(size))
    return {"neurons": idx.astype(np.int64), "maps": maps, "centre": centre, "size": size}


def tuning(model, session=None, neurons=None, pupil_center=None, behavior=None, progress=None, **options):
    """Orientation / spatial-frequency tuning from full-field gratings (options:
    n_ori, n_sf, n_phase, sf_min, sf_max, contrast, gray). Returns a dict of
    per-neuron arrays orientation (radians), spatial_frequency (cycles/pixel), osi,
    f1_f0, peak_rate, plus responses (gratings, count) and the grid (orientations,
    spatial_frequencies)."""
    i = model._session(session)
    idx = _neurons(model, i, neurons)
    cfg = TuningConfig()
    fn("npred_tuning_config_default")(ctypes.byref(cfg))
    for k, v in options.items():
        if k not in dict(TuningConfig._fields_):
            raise L.ArgumentError("tuning: unknown option %r (one of %s)" % (k, ", ".join(
                f for f, _ in TuningConfig._fields_)), "invalid argument", 6)
        setattr(cfg, k, v)
    pc = _one(model, "pupil_center", pupil_center, 2)
    bh = _one(model, "behavior", behavior, model.behavior_channels)
    res = (TuningResult * len(idx))()
    resp = np.empty((max(cfg.n_ori * cfg.n_sf * cfg.n_phase, 0), len(idx)), np.float32)
    errors = []
    st = fn("npred_tuning_run")(model._h, L.lib.npred_model_session_key(model._h, i), ctypes.byref(cfg),
                                idx.ctypes.data_as(P(c_int)), len(idx), L.fptr(pc), L.fptr(bh), res, L.fptr(resp),
                                _progress(progress, errors), None)
    if errors:
        raise errors[0]
    L.check(st, "tuning")
    out = {k: np.array([getattr(r, k) for r in res]) for k, _ in TuningResult._fields_}
    out["neurons"] = idx.astype(np.int64)
    out["responses"] = resp
    out["orientations"] = np.arange(cfg.n_ori) * np.pi / cfg.n_ori
    out["spatial_frequencies"] = np.array([fn("npred_tuning_sf")(ctypes.byref(cfg), f) for f in range(cfg.n_sf)])
    return out
