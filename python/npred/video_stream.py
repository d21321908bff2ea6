"""Video models one frame at a time (npred/video_model.h, npred/video_stream.h): the
minimal model handle a stream needs (create, load, save, predict whole clips) and
npred.Stream, the streaming digital twin.

    m = npred.VideoModel.load("run/")
    s = npred.Stream(m, "dynamic29515-10-12")
    for frame, pupil in camera:                 # frame (C, H, W), pupil (2,)
        rates = s.push(frame, pupil_center=pupil)   # (n,) float32, None during a warm-up
"""
import ctypes
import json
import os

import numpy as np

from . import _lib as L
from ._lib import P, c_char_p, c_double, c_float, c_int, c_void_p, lib


class _Session(ctypes.Structure):
    _fields_ = [("key", c_char_p), ("n_neurons", c_int), ("coords", P(c_double)), ("coord_dims", c_int),
                ("mean_activity", P(c_float))]


_H = c_void_p
L._fn("npred_video_model_create", c_int, P(_H), c_char_p, c_char_p, c_int, c_int, c_int, P(_Session), c_int, c_int)
L._fn("npred_video_model_load", c_int, P(_H), c_char_p, c_int)
L._fn("npred_video_model_save", c_int, _H, c_char_p)
L._fn("npred_video_model_free", None, _H)
L._fn("npred_video_model_predict", c_int, _H, c_char_p, P(c_float), c_int, c_int, c_int, c_int, c_int, P(c_float),
      P(c_float))
L._fn("npred_video_model_n_sessions", c_int, _H)
L._fn("npred_video_model_session_key", c_char_p, _H, c_int)
L._fn("npred_video_model_session_neurons", c_int, _H, c_int)
L._fn("npred_video_model_input_shape", None, _H, P(c_int), P(c_int), P(c_int))
L._fn("npred_video_model_temporal_cutoff", c_int, _H)
L._fn("npred_video_model_has_shifter", c_int, _H)
L._fn("npred_video_model_set_loader_json", c_int, _H, c_char_p)
L._fn("npred_stream_open", c_int, P(_H), _H, c_char_p)
L._fn("npred_stream_free", None, _H)
L._fn("npred_stream_reset", None, _H)
L._fn("npred_stream_push", c_int, _H, P(c_float), c_int, c_int, c_int, P(c_float), P(c_float), P(c_float))
L._fn("npred_stream_neurons", c_int, _H)
L._fn("npred_stream_warmup_frames", c_int, _H)
L._fn("npred_stream_frames_pushed", c_int, _H)
L._fn("npred_stream_behavior_channels", c_int, _H)


class VideoModel:
    """A SENSORIUM 2023 video model (the kit's VideoFiringRateEncoder). Not
    thread-safe: one thread at a time (streams opened on it are independent)."""

    def __init__(self, handle):
        self._o = L.Owned(handle, lib.npred_video_model_free)

    @classmethod
    def create(cls, config, input_shape, sessions, max_batch=8):
        """A new model initialised as make_video_model does. config: the kit's
        make_video_model arguments (a dict or JSON text; `seed` required);
        input_shape (C, H, W); sessions: a list of (key, n_neurons) or (key,
        n_neurons, cell_motor_coordinates (n, d)) (the coordinates are needed with the
        cortex grid predictor)."""
        text = config if isinstance(config, str) else json.dumps(config)
        arr = (_Session * len(sessions))()
        keep = []
        for i, s in enumerate(sessions):
            key = L.cstr(s[0])
            keep.append(key)
            arr[i].key, arr[i].n_neurons = key, int(s[1])
            if len(s) > 2 and s[2] is not None:
                c = np.ascontiguousarray(s[2], dtype=np.float64)
                keep.append(c)
                arr[i].coords, arr[i].coord_dims = c.ctypes.data_as(P(c_double)), c.shape[1]
        C, H, W = (int(v) for v in input_shape)
        h = _H()
        L.check(lib.npred_video_model_create(ctypes.byref(h), L.cstr(text), b"config", C, H, W, arr, len(sessions),
                                             int(max_batch)))
        return cls(h)

    @classmethod
    def load(cls, path, max_batch=8):
        """A model saved by save() / npred (a folder holding model.safetensors, or the file)."""
        h = _H()
        L.check(lib.npred_video_model_load(ctypes.byref(h), L.cstr(os.fspath(path)), int(max_batch)))
        return cls(h)

    @property
    def _h(self):
        return self._o.handle

    def save(self, path):
        L.check(lib.npred_video_model_save(self._h, L.cstr(os.fspath(path))))

    @property
    def sessions(self):
        return [lib.npred_video_model_session_key(self._h, i).decode() for i in
                range(lib.npred_video_model_n_sessions(self._h))]

    def neurons(self, session=None):
        return lib.npred_video_model_session_neurons(self._h, self._index(session))

    @property
    def input_shape(self):
        c, h, w = c_int(), c_int(), c_int()
        lib.npred_video_model_input_shape(self._h, ctypes.byref(c), ctypes.byref(h), ctypes.byref(w))
        return c.value, h.value, w.value

    @property
    def temporal_cutoff(self):
        return lib.npred_video_model_temporal_cutoff(self._h)

    @property
    def has_shifter(self):
        return bool(lib.npred_video_model_has_shifter(self._h))

    def set_loader(self, loader):
        """Record the mouse_video_loader arguments (dict or JSON text; None removes it)."""
        text = None if loader is None else loader if isinstance(loader, str) else json.dumps(loader)
        L.check(lib.npred_video_model_set_loader_json(self._h, L.cstr(text)))

    def _index(self, session):
        keys = self.sessions
        if session is None:
            return 0
        if session not in keys:
            raise L.ArgumentError("unknown session %r (this model has: %s)" % (session, ", ".join(keys)),
                                  "invalid argument", 6)
        return keys.index(session)

    def predict(self, videos, session=None, pupil_center=None):
        """Eval-mode rates (B, T', n) of videos (B, C, T, H, W) (pupil_center (B, 2, T)
        with a shifter), T' = T - temporal_cutoff."""
        i = self._index(session)
        x = L.as_f32(videos, "videos", 5)
        B, C, T, H, W = x.shape
        pc = None if pupil_center is None else L.as_f32(pupil_center, "pupil_center", 3)
        if pc is not None and pc.shape != (B, 2, T):
            raise L.ShapeError("pupil_center: expected (%d, 2, %d), got %s" % (B, T, pc.shape), "shape error", 3)
        out = np.empty((B, max(T - self.temporal_cutoff, 0), self.neurons(self.sessions[i])), np.float32)
        key = L.cstr(self.sessions[i])
        L.check(lib.npred_video_model_predict(self._h, key, L.fptr(x), B, C, T, H, W, L.fptr(pc), L.fptr(out)))
        return out


class Stream:
    """One session of a VideoModel, one frame at a time, the recurrent / temporal state
    kept inside: pushing a clip's frames gives exactly VideoModel.predict of the clip,
    frame by frame. The stream copies the model's parameters when it is made (a model
    changed later needs a new Stream); several streams may run on one model."""

    def __init__(self, model, session=None):
        key = model.sessions[model._index(session)]
        h = _H()
        L.check(lib.npred_stream_open(ctypes.byref(h), model._h, L.cstr(key)))
        self._o = L.Owned(h, lib.npred_stream_free)
        self.session = key
        self.frame_shape = model.input_shape
        self.neurons = lib.npred_stream_neurons(h)
        self.warmup_frames = lib.npred_stream_warmup_frames(h)
        self.behavior_channels = lib.npred_stream_behavior_channels(h)

    @property
    def frames_pushed(self):
        return lib.npred_stream_frames_pushed(self._o.handle)

    def reset(self):
        """Forget every frame: the next push starts a new clip."""
        lib.npred_stream_reset(self._o.handle)

    def push(self, frame, pupil_center=None, behavior=None):
        """Rates (n,) float32 for frame (C, H, W), or None during the warm-up (the first
        warmup_frames pushes of a 3D core). pupil_center (2,) is required with a
        shifter; behavior (behavior_channels,) fills the frame's behaviour planes."""
        x = L.as_f32(frame, "frame", 3)
        if x.shape != tuple(self.frame_shape):
            raise L.ShapeError("frame: expected %s, got %s" % (tuple(self.frame_shape), x.shape), "shape error", 3)
        pc = None if pupil_center is None else L.as_f32(pupil_center, "pupil_center", 1)
        bh = None if behavior is None else L.as_f32(behavior, "behavior", 1)
        if pc is not None and pc.shape != (2,):
            raise L.ShapeError("pupil_center: expected 2 values, got %s" % (pc.shape,), "shape error", 3)
        if bh is not None and bh.shape != (self.behavior_channels,):
            raise L.ShapeError("behavior: expected %d values, got %s" % (self.behavior_channels, bh.shape),
                               "shape error", 3)
        out = np.empty(self.neurons, np.float32)
        got = lib.npred_stream_push(self._o.handle, L.fptr(x), x.shape[0], x.shape[1], x.shape[2], L.fptr(bh),
                                    L.fptr(pc), L.fptr(out))
        if got < 0:
            raise L.error(6)
        return out if got else None
