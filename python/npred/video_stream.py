"""Video models one frame at a time (npred/video_stream.h): npred.Stream, the
streaming digital twin, on an npred.VideoModel (video_model.py).

    m = npred.VideoModel.load("run/")
    s = npred.Stream(m, "dynamic29515-10-12")
    for frame, pupil in camera:                 # frame (C, H, W), pupil (2,)
        rates = s.push(frame, pupil_center=pupil)   # (n,) float32, None during a warm-up
"""
import ctypes

import numpy as np

from . import _lib as L
from ._lib import P, c_char_p, c_float, c_int, c_void_p, lib

_H = c_void_p
L._fn("npred_stream_open", c_int, P(_H), _H, c_char_p)
L._fn("npred_stream_free", None, _H)
L._fn("npred_stream_reset", None, _H)
L._fn("npred_stream_push", c_int, _H, P(c_float), c_int, c_int, c_int, P(c_float), P(c_float), P(c_float))
L._fn("npred_stream_neurons", c_int, _H)
L._fn("npred_stream_warmup_frames", c_int, _H)
L._fn("npred_stream_frames_pushed", c_int, _H)
L._fn("npred_stream_behavior_channels", c_int, _H)


class Stream:
    """One session of a VideoModel, one frame at a time, the recurrent / temporal state
    kept inside: pushing a clip's frames gives exactly VideoModel.predict of the clip,
    frame by frame. The stream copies the model's parameters when it is made (a model
    changed later needs a new Stream); several streams may run on one model."""

    def __init__(self, model, session=None):
        key = model._key(session)
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
