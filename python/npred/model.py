"""npred models (npred/model.h): open, create, predict, describe, save."""
import ctypes
import json
import os

import numpy as np

from . import _lib as L
from ._lib import P, c_int, c_int64, c_void_p, lib


def _shape_error(msg):
    return L.ShapeError(msg, "shape error", 3)


class Model:
    """A model: shared core, one readout (and optional shifter / modulator) per
    session, firing rates ELU(x + offset) + 1.

        m = npred.Model.open("run/")            # run folder, .safetensors or PyTorch .pth
        rates = m.predict(images, session="21067-10-18")   # (B, n) float32

    Not thread-safe: use one Model per thread."""

    def __init__(self, handle, source=None):
        if not handle:
            raise L.ArgumentError("Model: use Model.open or Model.create", "invalid argument", 6)
        self._h = handle
        self.source = source

    # ---- construction
    @classmethod
    def open(cls, path, max_batch=64, image_size=None):
        """A run folder (model.safetensors inside), a .safetensors file, or a PyTorch
        neuralpredictors/sensorium checkpoint (.pth/.pt, architecture inferred).
        image_size (h, w) is the input size of an imported checkpoint (default the
        SENSORIUM 36 x 64). max_batch sizes the activation memory; larger batches are
        predicted in chunks."""
        h, w = image_size if image_size is not None else (0, 0)
        handle = c_void_p()
        L.check(lib.npred_model_open(ctypes.byref(handle), L.cstr(os.fspath(path)), int(h), int(w), int(max_batch)))
        return cls(handle, os.fspath(path))

    @staticmethod
    def _config_text(config):
        """(JSON text, name for messages) of a config dict, JSON text or JSON file."""
        if isinstance(config, dict):
            return json.dumps(config), None
        if isinstance(config, str) and config.lstrip().startswith("{"):
            return config, None
        where = os.fspath(config)
        try:
            with open(where) as f:
                return f.read(), where
        except OSError as e:
            raise L.FileError("%s: cannot read: %s" % (where, e.strerror), "io error", 1) from None

    @staticmethod
    def _sessions(sessions):
        """The npred_model_session array for sessions, and the arrays it points into."""
        if isinstance(sessions, dict):
            sessions = [{"key": k, "n_neurons": n} for k, n in sessions.items()]
        keep = []
        arr = (L.ModelSession * len(sessions))()
        for i, s in enumerate(sessions):
            n = int(s["n_neurons"])
            key = L.cstr(s["key"])
            keep.append(key)
            arr[i].key = key
            arr[i].n_neurons = n
            if s.get("coords") is not None:
                c = np.ascontiguousarray(s["coords"], dtype=np.float64)
                if c.ndim != 2 or c.shape[0] != n:
                    raise _shape_error("session %s: coords must be (%d, d), got %s" % (s["key"], n, c.shape))
                keep.append(c)
                arr[i].coords = c.ctypes.data_as(P(L.c_double))
                arr[i].coord_dims = c.shape[1]
            if s.get("mean_activity") is not None:
                a = L.as_f32(s["mean_activity"], "mean_activity").reshape(-1)
                if a.shape[0] != n:
                    raise _shape_error("session %s: mean_activity must have %d values" % (s["key"], n))
                keep.append(a)
                arr[i].mean_activity = L.fptr(a)
            if s.get("match_ids") is not None:
                m = np.ascontiguousarray(s["match_ids"], dtype=np.int64).reshape(-1)
                if m.shape[0] != n:
                    raise _shape_error("session %s: match_ids must have %d values" % (s["key"], n))
                keep.append(m)
                arr[i].match_ids = m.ctypes.data_as(P(c_int64))
        return arr, keep

    @classmethod
    def create(cls, config, input_shape, sessions, max_batch=64, seed=0):
        """A new, initialised model from a configuration (dict or JSON file: sensorium
        builder arguments or the structured form of docs/config.md) for images
        input_shape = (C, H, W). sessions: {data_key: n_neurons} or a list of dicts
        with key, n_neurons and optionally coords (n, d) cell_motor_coordinates,
        mean_activity (n,) initial readout bias, match_ids (n,) multi_match_id."""
        text, where = cls._config_text(config)
        arr, keep = cls._sessions(sessions)
        c, h, w = (int(v) for v in input_shape)
        handle = c_void_p()
        L.check(lib.npred_model_create(ctypes.byref(handle), text.encode(), L.cstr(where), c, h, w, arr, len(arr),
                                       int(max_batch), int(seed) & (2**64 - 1)))
        return cls(handle)

    @classmethod
    def plan(cls, config, input_shape, sessions):
        """The structure of the model `create` would build, without its parameter
        memory: describe(), param_count(), readout_repr() and the shapes work (for a
        model too large to allocate); predict, save and positions raise."""
        text, where = cls._config_text(config)
        arr, keep = cls._sessions(sessions)
        c, h, w = (int(v) for v in input_shape)
        handle = c_void_p()
        L.check(lib.npred_model_plan(ctypes.byref(handle), text.encode(), L.cstr(where), c, h, w, arr, len(arr)))
        m = cls(handle)
        m.source = "plan"
        return m

    @classmethod
    def check_config(cls, config):
        """Parse and check a model configuration as create does (ConfigError naming
        the key), without building anything."""
        text, where = cls._config_text(config)
        L.check(lib.npred_model_config_check(text.encode(), L.cstr(where)))

    def close(self):
        if getattr(self, "_h", None):
            lib.npred_model_free(self._h)
            self._h = None

    __del__ = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _handle(self):
        if not self._h:
            raise L.ArgumentError("the model was closed", "invalid argument", 6)
        return self._h

    # ---- introspection
    @property
    def sessions(self):
        """{data_key: n_neurons}, in the model's session order."""
        h = self._handle()
        return {lib.npred_model_session_key(h, i).decode(): lib.npred_model_session_neurons(h, i)
                for i in range(lib.npred_model_n_sessions(h))}

    @property
    def input_shape(self):
        c, hh, w = c_int(), c_int(), c_int()
        lib.npred_model_input_shape(self._handle(), ctypes.byref(c), ctypes.byref(hh), ctypes.byref(w))
        return (c.value, hh.value, w.value)

    @property
    def core_output_shape(self):
        c, hh, w = c_int(), c_int(), c_int()
        lib.npred_model_core_output_shape(self._handle(), ctypes.byref(c), ctypes.byref(hh), ctypes.byref(w))
        return (c.value, hh.value, w.value)

    @property
    def has_shifter(self):
        return bool(lib.npred_model_has_shifter(self._handle()))

    @property
    def behavior_channels(self):
        """Behaviour inputs of the modulator (0 without one)."""
        return lib.npred_model_behavior_channels(self._handle())

    @property
    def pupil_channels(self):
        """Pupil-center values per image the shifter takes (0 without a shifter)."""
        return lib.npred_model_pupil_channels(self._handle())

    def param_count(self, prefix=None):
        """Trainable parameters whose state_dict name starts with prefix (None: all),
        e.g. "core.", "readout.<key>.", "shifter.<key>."."""
        return lib.npred_model_param_count(self._handle(), L.cstr(prefix))

    @property
    def buffer_count(self):
        """Values held in buffers (BatchNorm running statistics, grids, ...)."""
        return lib.npred_model_buffer_count(self._handle())

    def readout_repr(self, session=None):
        """A session's readout in the reference's words, e.g.
        'FullFactorized2d (64 x 144 x 256 -> 8372) with bias, normalized'."""
        return L.take_string(lib.npred_model_readout_repr(self._handle(), self._session(session)))

    @property
    def config(self):
        """The resolved configuration (dict)."""
        return json.loads(L.take_string(lib.npred_model_config_json(self._handle())))

    def describe(self):
        """Architecture in the reference's words: reprs, parameter counts, shapes."""
        return L.take_string(lib.npred_model_describe(self._handle()))

    def __repr__(self):
        if not getattr(self, "_h", None):
            return "npred.Model(closed)"
        return "npred.Model(%s: input %s, sessions %s)" % (self.source or "created", self.input_shape,
                                                            ", ".join("%s (%d)" % kv for kv in self.sessions.items()))

    def _session(self, session):
        h = self._handle()
        n = lib.npred_model_n_sessions(h)
        if session is None:
            if n != 1:
                raise L.ArgumentError("the model has %d sessions: give session= (one of %s)"
                                      % (n, ", ".join(self.sessions)), "invalid argument", 6)
            return 0
        if isinstance(session, (int, np.integer)):
            if not 0 <= session < n:
                raise L.ArgumentError("session %d out of range (%d sessions)" % (session, n), "invalid argument", 6)
            return int(session)
        i = lib.npred_model_session_index(h, L.cstr(session))
        if i < 0:
            raise L.ArgumentError("session %r: the model has %s" % (session, ", ".join(self.sessions)),
                                  "invalid argument", 6)
        return i

    def positions(self, session=None):
        """Readout positions (eval mode) of a session's neurons: (n, 2) x, y in [-1, 1]."""
        i = self._session(session)
        n = lib.npred_model_session_neurons(self._h, i)
        out = np.empty((n, 2), np.float32)
        L.check(lib.npred_model_readout_positions(self._h, i, L.fptr(out)))
        return out

    # ---- prediction
    def _inputs(self, images, pupil_center, behavior):
        x = L.as_f32(images, "images")
        shape = self.input_shape
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise _shape_error("images: expected (B, %d, %d, %d), got %s" % (shape + (tuple(np.shape(images)),)))
        B = x.shape[0]
        pc = bh = None
        if self.has_shifter:
            if pupil_center is None:
                raise L.ArgumentError("the model has a shifter: pupil_center (B, 2) is required", "invalid argument", 6)
            pc = L.as_f32(pupil_center, "pupil_center")
            if pc.shape != (B, 2):
                raise _shape_error("pupil_center: expected (%d, 2), got %s" % (B, pc.shape))
        elif pupil_center is not None:
            raise L.ArgumentError("pupil_center given, but the model has no shifter", "invalid argument", 6)
        k = self.behavior_channels
        if k:
            if behavior is None:
                raise L.ArgumentError("the model has a modulator: behavior (B, %d) is required" % k,
                                      "invalid argument", 6)
            bh = L.as_f32(behavior, "behavior")
            if bh.shape != (B, k):
                raise _shape_error("behavior: expected (%d, %d), got %s" % (B, k, bh.shape))
        elif behavior is not None:
            raise L.ArgumentError("behavior given, but the model has no modulator", "invalid argument", 6)
        return x, pc, bh

    def predict(self, images, session=None, pupil_center=None, behavior=None):
        """Eval-mode firing rates (B, n) float32 for images (B, C, H, W) (any
        float array; a C-contiguous float32 one is used without a copy).
        pupil_center (B, 2) is required with a shifter, behavior (B, k) with a
        modulator."""
        i = self._session(session)
        x, pc, bh = self._inputs(images, pupil_center, behavior)
        B = x.shape[0]
        out = np.empty((B, lib.npred_model_session_neurons(self._h, i)), np.float32)
        key = lib.npred_model_session_key(self._h, i)
        if B:
            L.check(lib.npred_model_predict(self._h, key, L.fptr(x), B, L.fptr(pc), L.fptr(bh), L.fptr(out)))
        return out

    def input_gradient(self, images, session=None, weights=None, pupil_center=None, behavior=None):
        """Input gradient (eval mode): returns (gradient (B, C, H, W), rates (B, n)) with
        gradient[b] = d(sum_j weights[b, j] * rate[b, j]) / d images[b]; weights
        (B, n) default to ones (the population). A one-hot row gives one neuron's
        gradient. See npred.mei / npred.rf for the experiments built on it."""
        from .insilico import input_gradient
        return input_gradient(self, images, session, weights, pupil_center, behavior)

    # ---- saving
    def save(self, path):
        """Write path/model.safetensors (a folder), or the file itself when path ends
        in .safetensors; atomically."""
        p = os.fspath(path)
        if p.endswith(".safetensors"):
            L.check(lib.npred_model_save_file(self._handle(), L.cstr(p)))
        else:
            L.check(lib.npred_model_save(self._handle(), L.cstr(p)))

    def copy_parameters(self, src, prefix=None):
        """Copy every tensor of src whose name starts with prefix (e.g. "core.") and
        that this model has too; returns how many were copied."""
        n = c_int()
        L.check(lib.npred_model_copy_parameters(self._handle(), src._handle(), L.cstr(prefix), ctypes.byref(n)))
        return n.value
