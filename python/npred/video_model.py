"""npred video models (npred/video_model.h): the SENSORIUM 2023 kit's
VideoFiringRateEncoder: open, create, predict whole clips, save, describe."""
import ctypes
import json
import os

import numpy as np

from . import _lib as L
from ._lib import P, c_int, c_void_p, lib
from .model import Model


class VideoModelSession(ctypes.Structure):
    """Mirror of npred_video_model_session."""
    _fields_ = [("key", ctypes.c_char_p), ("n_neurons", c_int), ("coords", P(ctypes.c_double)), ("coord_dims", c_int),
                ("mean_activity", P(ctypes.c_float))]


L._fn("npred_video_model_create", c_int, P(c_void_p), ctypes.c_char_p, ctypes.c_char_p, c_int, c_int, c_int,
      P(VideoModelSession), c_int, c_int)
L._fn("npred_video_model_load", c_int, P(c_void_p), ctypes.c_char_p, c_int)
L._fn("npred_video_model_import_pth", c_int, P(c_void_p), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, c_int,
      c_int, P(ctypes.c_char_p), P(c_int), c_int, c_int)
L._fn("npred_video_model_save", c_int, c_void_p, ctypes.c_char_p)
L._fn("npred_video_model_free", None, c_void_p)
L._fn("npred_video_model_predict", c_int, c_void_p, ctypes.c_char_p, P(ctypes.c_float), c_int, c_int, c_int, c_int,
      c_int, P(ctypes.c_float), P(ctypes.c_float))
L._fn("npred_video_model_n_sessions", c_int, c_void_p)
L._fn("npred_video_model_session_key", ctypes.c_char_p, c_void_p, c_int)
L._fn("npred_video_model_session_neurons", c_int, c_void_p, c_int)
L._fn("npred_video_model_input_shape", None, c_void_p, P(c_int), P(c_int), P(c_int))
L._fn("npred_video_model_temporal_cutoff", c_int, c_void_p)
L._fn("npred_video_model_output_frames", c_int, c_void_p, c_int)
L._fn("npred_video_model_has_shifter", c_int, c_void_p)
L._fn("npred_video_model_core_type", ctypes.c_char_p, c_void_p)
L._fn("npred_video_model_uses_gru", c_int, c_void_p)
L._fn("npred_video_model_config_json", c_void_p, c_void_p)
L._fn("npred_video_model_loader_json", ctypes.c_char_p, c_void_p)
L._fn("npred_video_model_set_loader_json", c_int, c_void_p, ctypes.c_char_p)
L._fn("npred_video_model_describe", c_void_p, c_void_p)


class VideoModel:
    """A video model: a 3D core (or a 2D core per frame and a ConvGRU), a
    FullGaussian2d readout per frame and session, an optional MLP shifter.

        m = npred.VideoModel.open("run/")
        rates = m.predict(videos, session="dynamic29515-10-12", pupil_center=pc)  # (B, T', n)

    videos (B, C, T, H, W) as the kit's loader gives them, pupil_center (B, 2, T);
    T' = T - temporal_cutoff (output frame t is input frame t + temporal_cutoff).
    Not thread-safe: use one VideoModel per thread."""

    def __init__(self, handle, source=None):
        if not handle:
            raise L.ArgumentError("VideoModel: use VideoModel.open or VideoModel.create", "invalid argument", 6)
        self._h = handle
        self.source = source

    @classmethod
    def open(cls, path, max_batch=8):
        """A folder holding model.safetensors (npred_video_model_save) or the file."""
        handle = c_void_p()
        L.check(lib.npred_video_model_load(ctypes.byref(handle), L.cstr(os.fspath(path)), int(max_batch)))
        return cls(handle, os.fspath(path))

    @classmethod
    def load(cls, path, max_batch=8):
        """The same as open."""
        return cls.open(path, max_batch)

    @classmethod
    def create(cls, config, input_shape, sessions, max_batch=8):
        """A new model initialised as make_video_model does. config: the kit's
        make_video_model arguments (a dict, JSON text or a JSON file; `seed` is
        required); input_shape (C, H, W); sessions: a list of dicts with key,
        n_neurons, and coords (n, d) cell_motor_coordinates (needed by the cortex grid
        predictor), optionally mean_activity (n,) (the readout bias); or of tuples
        (key, n_neurons[, coords])."""
        text, where = Model._config_text(config)
        keep = []
        arr = (VideoModelSession * len(sessions))()
        for i, s in enumerate(sessions):
            if not isinstance(s, dict):
                s = {"key": s[0], "n_neurons": s[1], "coords": s[2] if len(s) > 2 else None}
            n = int(s["n_neurons"])
            key = L.cstr(s["key"])
            keep.append(key)
            arr[i].key, arr[i].n_neurons = key, n
            if s.get("coords") is not None:
                c = np.ascontiguousarray(s["coords"], dtype=np.float64)
                if c.ndim != 2 or c.shape[0] != n:
                    raise L.ShapeError("session %s: coords must be (%d, d), got %s" % (s["key"], n, c.shape),
                                       "shape error", 3)
                keep.append(c)
                arr[i].coords, arr[i].coord_dims = c.ctypes.data_as(P(ctypes.c_double)), c.shape[1]
            if s.get("mean_activity") is not None:
                a = L.as_f32(s["mean_activity"], "mean_activity").reshape(-1)
                if a.shape[0] != n:
                    raise L.ShapeError("session %s: mean_activity must have %d values" % (s["key"], n),
                                       "shape error", 3)
                keep.append(a)
                arr[i].mean_activity = L.fptr(a)
        c, h, w = (int(v) for v in input_shape)
        handle = c_void_p()
        L.check(lib.npred_video_model_create(ctypes.byref(handle), text.encode(), L.cstr(where), c, h, w, arr,
                                             len(arr), int(max_batch)))
        return cls(handle)

    @classmethod
    def import_pth(cls, path, config, frame_size=None, sessions=None, max_batch=8):
        """The kit's trained model saved as a PyTorch state_dict
        (torch.save(model.state_dict(), path)), built from config (its make_video_model
        arguments: a dict, JSON text or a JSON file). frame_size (H, W): the frames it
        takes (None: 36 x 64, the 2023 frames). sessions: None takes the file's
        readout.<key> sessions; else a list of (key, n_neurons) (or dicts) that must be
        exactly the file's, in the model's order. Every tensor of the file must be one of
        the model's and the reverse (docs/video.md)."""
        text, where = Model._config_text(config)
        h, w = (0, 0) if frame_size is None else (int(v) for v in frame_size)
        sessions = sessions or []
        keys = (ctypes.c_char_p * max(len(sessions), 1))()
        nn = (c_int * max(len(sessions), 1))()
        for i, s in enumerate(sessions):
            key, n = (s["key"], s["n_neurons"]) if isinstance(s, dict) else (s[0], s[1])
            keys[i], nn[i] = L.cstr(key), int(n)
        handle = c_void_p()
        L.check(lib.npred_video_model_import_pth(ctypes.byref(handle), L.cstr(os.fspath(path)), text.encode(),
                                                 L.cstr(where), h, w, keys, nn, len(sessions), int(max_batch)))
        return cls(handle, os.fspath(path))

    def close(self):
        if getattr(self, "_h", None):
            lib.npred_video_model_free(self._h)
            self._h = None

    __del__ = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def save(self, directory):
        """Write directory/model.safetensors atomically."""
        L.check(lib.npred_video_model_save(self._h, L.cstr(os.fspath(directory))))

    # ---- introspection
    @property
    def sessions(self):
        """{data_key: n_neurons} in the model's order."""
        return {lib.npred_video_model_session_key(self._h, i).decode(): lib.npred_video_model_session_neurons(self._h, i)
                for i in range(lib.npred_video_model_n_sessions(self._h))}

    def _key(self, session=None):
        """The session's key: `session`, or the first session when None."""
        ses = self.sessions
        if session is None:
            return next(iter(ses))
        if session not in ses:
            raise L.ArgumentError("unknown session %r (this model has: %s)" % (session, ", ".join(ses)),
                                  "invalid argument", 6)
        return session

    def neurons(self, session=None):
        """Neurons of a session (None: the first)."""
        return self.sessions[self._key(session)]

    @property
    def input_shape(self):
        """(C, H, W) of the videos."""
        c, h, w = c_int(), c_int(), c_int()
        lib.npred_video_model_input_shape(self._h, ctypes.byref(c), ctypes.byref(h), ctypes.byref(w))
        return c.value, h.value, w.value

    @property
    def temporal_cutoff(self):
        return lib.npred_video_model_temporal_cutoff(self._h)

    def output_frames(self, T):
        """Output frames of a clip of T frames (0 when T is too short)."""
        return lib.npred_video_model_output_frames(self._h, int(T))

    @property
    def has_shifter(self):
        """True when predict needs pupil_center."""
        return bool(lib.npred_video_model_has_shifter(self._h))

    @property
    def core_type(self):
        return lib.npred_video_model_core_type(self._h).decode()

    @property
    def uses_gru(self):
        return bool(lib.npred_video_model_uses_gru(self._h))

    @property
    def config(self):
        """The make_video_model arguments (dict)."""
        return json.loads(L.take_string(lib.npred_video_model_config_json(self._h)))

    @property
    def loader(self):
        """The mouse_video_loader arguments recorded with the model (dict) or None."""
        s = lib.npred_video_model_loader_json(self._h)
        return json.loads(s.decode()) if s else None

    @loader.setter
    def loader(self, value):
        L.check(lib.npred_video_model_set_loader_json(self._h, None if value is None else json.dumps(value).encode()))

    def set_loader(self, loader):
        """Record the mouse_video_loader arguments (dict or JSON text; None removes it)."""
        text = None if loader is None else loader if isinstance(loader, str) else json.dumps(loader)
        L.check(lib.npred_video_model_set_loader_json(self._h, L.cstr(text)))

    def describe(self):
        return L.take_string(lib.npred_video_model_describe(self._h))

    # ---- prediction
    def predict(self, videos, session=None, pupil_center=None):
        """Eval-mode rates (B, T', n) float32 of session `session` (optional for a
        one-session model) for videos (B, C, T, H, W) (or (C, T, H, W): one clip,
        rates (T', n)); pupil_center (B, 2, T) (or (2, T)) when the model has a
        shifter."""
        v = L.as_f32(videos, "videos")
        one = v.ndim == 4
        if one:
            v = v[None]
        if v.ndim != 5:
            raise L.ShapeError("videos: expected (B, C, T, H, W), got shape %s" % (np.shape(videos),), "shape error", 3)
        B, C, T, H, W = v.shape
        ses = self.sessions
        if session is None:
            if len(ses) != 1:
                raise L.ArgumentError("predict: the model has sessions %s: name one" % ", ".join(ses),
                                      "invalid argument", 6)
            session = next(iter(ses))
        if session not in ses:
            raise L.ArgumentError("unknown session '%s' (this model has: %s)" % (session, ", ".join(ses)),
                                  "invalid argument", 6)
        pc = None
        if self.has_shifter:
            if pupil_center is None:
                raise L.ArgumentError("this model has a shifter: pupil_center (B, 2, T) is required",
                                      "invalid argument", 6)
            pc = L.as_f32(pupil_center, "pupil_center")
            if one and pc.ndim == 2:
                pc = pc[None]
            if pc.shape != (B, 2, T):
                raise L.ShapeError("pupil_center: expected (%d, 2, %d), got %s" % (B, T, pc.shape), "shape error", 3)
        elif pupil_center is not None:
            raise L.ArgumentError("this model has no shifter: it takes no pupil_center", "invalid argument", 6)
        T1 = max(self.output_frames(T), 1)
        out = np.empty((B, T1, ses[session]), dtype=np.float32)
        L.check(lib.npred_video_model_predict(self._h, L.cstr(session), L.fptr(v), B, C, T, H, W, L.fptr(pc),
                                              L.fptr(out)))
        return out[0] if one else out

    def __repr__(self):
        return "VideoModel(%s, %s, sessions=%s)" % (self.source or "created", self.core_type, self.sessions)
