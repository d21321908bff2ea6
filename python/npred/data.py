"""SENSORIUM datasets and loaders (npred/data.h) as numpy arrays."""
import ctypes
import json
import os

import numpy as np

from . import _lib as L
from ._lib import P, c_char_p, c_int, c_int64, c_size_t, c_void_p, lib


def _tier_index(tier):
    if isinstance(tier, int) and 0 <= tier < L.N_TIERS:
        return tier
    if tier in L.TIERS:
        return L.TIERS.index(tier)
    raise L.ArgumentError("tier %r: expected one of %s" % (tier, ", ".join(L.TIERS)), "invalid argument", 6)


def _names(fn, handle):
    arr = P(c_char_p)()
    n = fn(handle, ctypes.byref(arr))
    return [arr[i].decode() for i in range(n)]


class Dataset:
    """One SENSORIUM scan (a folder or its .zip), read into memory at open.

    The data arrays are zero-copy, read-only views of the library's cache:
    `images` (N, C, H, W), `responses` (N, n), `behavior` (N, k) and
    `pupil_center` (N, 2) (None where the scan has no such field), raw as stored
    (no normalisation). `batches()` gives the static_loader's transformed batches."""

    def __init__(self, path, data_key=None):
        h = c_void_p()
        L.check(lib.npred_dataset_open(ctypes.byref(h), L.cstr(os.fspath(path)), L.cstr(data_key)))
        # the views below keep this owner (not the Dataset) alive: no reference cycle
        self._owner = L.Owned(h, lib.npred_dataset_free)
        info = L.DatasetInfo()
        lib.npred_dataset_get_info(self._h, ctypes.byref(info))
        self.path = os.fspath(path)
        self.data_key = info.data_key.decode()
        self.is_zip = bool(info.is_zip)
        self.n_trials = info.n_trials
        self.n_neurons = info.n_neurons
        self.image_shape = (info.img_c, info.img_h, info.img_w)
        self.image_range = (float(info.img_min), float(info.img_max))
        self.tier_counts = {t: info.tier_count[i] for i, t in enumerate(L.TIERS)}
        self._has = [bool(info.has_field[i]) for i in range(L.N_FIELDS)]
        self._size = [info.field_size[i] for i in range(L.N_FIELDS)]
        self._fields = {}

    @property
    def _h(self):
        if self._owner is None:
            raise L.ArgumentError("the dataset was closed", "invalid argument", 6)
        return self._owner.handle

    def close(self):
        """Drop this object's hold on the data: the memory is freed once no array
        taken from it is alive."""
        self._fields = {}
        self._owner = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "npred.Dataset(%r: %s, %d trials, %d neurons, images %s)" % (
            self.path, self.data_key, self.n_trials, self.n_neurons, "x".join(map(str, self.image_shape)))

    # ---- data fields
    def field(self, name):
        """The raw data of a field ("images", "responses", "behavior", "pupil_center"):
        a read-only (N, ...) float32 view, or None when the scan lacks it."""
        if name not in L.FIELDS:
            raise L.ArgumentError("field %r: expected one of %s" % (name, ", ".join(L.FIELDS)),
                                  "invalid argument", 6)
        f = L.FIELDS.index(name)
        if not self._has[f]:
            return None
        if name not in self._fields:
            shape = (self.n_trials,) + (self.image_shape if name == "images" else (self._size[f],))
            self._fields[name] = L.view(lib.npred_dataset_field(self._h, f), shape, L.c_float, self._owner, np.float32)
        return self._fields[name]

    images = property(lambda self: self.field("images"))
    responses = property(lambda self: self.field("responses"))
    behavior = property(lambda self: self.field("behavior"))
    pupil_center = property(lambda self: self.field("pupil_center"))

    # ---- metadata
    @property
    def tiers(self):
        """Tier name of every trial, (N,) str."""
        p = lib.npred_dataset_tiers(self._h)
        idx = np.ctypeslib.as_array(p, shape=(self.n_trials,)).copy() if self.n_trials else np.zeros(0, int)
        return np.array(L.TIERS)[idx]

    @property
    def image_ids(self):
        """frame_image_id of every trial as int64, (N,)."""
        return L.copy_out(lib.npred_dataset_image_ids(self._h), (self.n_trials,), c_int64, np.int64)

    def tier_trials(self, tier):
        """Trial indices of a tier, ascending."""
        return np.flatnonzero(self.tiers == L.TIERS[_tier_index(tier)])

    @property
    def trial_info(self):
        """meta/trials/*.npy by name (copies, numpy dtypes as stored)."""
        return {n: self._meta(lib.npred_dataset_trial_info, n) for n in _names(lib.npred_dataset_trial_info_names,
                                                                                self._h)}

    @property
    def neuron_info(self):
        """meta/neurons/*.npy by name (unit_ids, area, cell_motor_coordinates, ...)."""
        return {n: self._meta(lib.npred_dataset_neuron_info, n) for n in _names(lib.npred_dataset_neuron_info_names,
                                                                                 self._h)}

    def _meta(self, fn, name):
        p = fn(self._h, name.encode())
        return L.array_to_numpy(p.contents) if p else None

    def statistics(self, field=None):
        """meta/statistics/<field>/all/{mean,std,min,max,median} as float32 arrays
        (shape () for the scalar image statistics); all fields when field is None."""
        if field is None:
            out = {}
            for name in L.FIELDS:
                s = self.statistics(name)
                if s is not None:
                    out[name] = s
            return out
        if field not in L.FIELDS:
            raise L.ArgumentError("field %r: expected one of %s" % (field, ", ".join(L.FIELDS)),
                                  "invalid argument", 6)
        st = L.DatasetStats()
        lib.npred_dataset_get_stats(self._h, L.FIELDS.index(field), ctypes.byref(st))
        if not st.present:
            return None
        shape = () if field == "images" and st.count == 1 else (st.count,)
        out = {}
        for k in ("mean", "std", "min", "max", "median"):
            p = getattr(st, k)
            if p:
                out[k] = L.copy_out(p, shape, L.c_float, np.float32)
        return out

    # ---- batches
    def loader(self, **config):
        """A one-session Loaders over this scan (static_loaders arguments as keywords)."""
        return Loaders([self.path], **config)

    def batches(self, tier="train", **config):
        """Batches of one tier with the static_loader transforms, exactly as the C
        loader gives them: train shuffled from an npred rng seeded with the
        config's `seed` (0 when None), the other tiers in ascending trial order.
        Keywords are static_loaders arguments (batch_size is required)."""
        return self.loader(**config).batches(tier)


def _config_dict(config, where):
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    path = os.fspath(config)
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise L.FileError("%s: cannot read: %s" % (path, e.strerror), "io error", 1) from None
    except ValueError as e:
        raise L.ConfigError("%s: invalid JSON: %s" % (path, e), "config error", 4) from None


class _LoaderConfig:
    """An npred_loader_config parsed from a dict (static_loaders argument names)."""

    def __init__(self, cfg):
        self.buf = ctypes.create_string_buffer(L.LOADER_CONFIG_BYTES)
        lib.npred_loader_config_init(self.buf)
        paths, n = P(c_char_p)(), c_size_t()
        st = lib.npred_loader_config_parse(self.buf, json.dumps(cfg).encode(), ctypes.byref(paths), ctypes.byref(n))
        self.paths = [paths[i].decode() for i in range(n.value)]
        lib.npred_loader_paths_free(paths, n)
        if st:
            lib.npred_loader_config_free(self.buf)
            self.buf = None
            raise L.error(st, "dataset config")

    def __del__(self):
        if getattr(self, "buf", None) is not None:
            lib.npred_loader_config_free(self.buf)
            self.buf = None


class Batch(dict):
    """One batch: a dict of arrays (copies) -- images (B, C, H, W), responses (B, n),
    behavior / pupil_center when the loader includes them, trials (B,) trial rows,
    and any include_trial_info_keys (B, 1) -- with .data_key and .session."""

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None


def _batch_to_python(b):
    B = b.n
    out = Batch()
    out.data_key = b.data_key.decode()
    out.session = b.session
    out["images"] = L.copy_out(b.images, (B, b.c, b.h, b.w), L.c_float, np.float32)
    out["responses"] = L.copy_out(b.responses, (B, b.n_neurons), L.c_float, np.float32)
    if b.behavior:
        out["behavior"] = L.copy_out(b.behavior, (B, b.behavior_dim), L.c_float, np.float32)
    if b.pupil_center:
        out["pupil_center"] = L.copy_out(b.pupil_center, (B, b.pupil_dim), L.c_float, np.float32)
    for i in range(b.n_info):
        out[b.info_names[i].decode()] = L.copy_out(b.info[i], (B, 1), L.c_float, np.float32)
    out["trials"] = L.copy_out(b.trials, (B,), c_int64, np.int64)
    return out


class Loaders:
    """sensorium static_loaders over one or more scans (one session each), with the
    same transforms, neuron/image selection and batch order as npred's C loaders.

        Loaders(["A.zip", "B.zip"], batch_size=64, scale=0.25)
        Loaders(config="configs/dataset_sensorium.json", paths=[...])

    Keywords are static_loaders argument names; `config` (dict or JSON file) gives
    them as one object; keywords override it."""

    def __init__(self, paths=None, config=None, **options):
        cfg = _config_dict(config, "dataset config")
        cfg.update(options)
        if paths is not None:
            cfg.pop("paths", None)
        self.config = cfg
        self._cfg = _LoaderConfig(cfg)
        if paths is None:
            paths = self._cfg.paths
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        self.paths = [os.fspath(p) for p in paths]
        if not self.paths:
            raise L.ArgumentError("no scans: give paths or \"paths\" in the dataset config", "invalid argument", 6)
        arr = (c_char_p * len(self.paths))(*[L.cstr(p) for p in self.paths])
        self._h = c_void_p()
        L.check(lib.npred_loaders_open(ctypes.byref(self._h), arr, len(self.paths), self._cfg.buf))

    def __del__(self):
        h = getattr(self, "_h", None)
        if h:
            lib.npred_loaders_free(h)
            self._h = c_void_p()

    def __len__(self):
        return lib.npred_loaders_count(self._h)

    def _index(self, session):
        if session is None:
            if len(self) != 1:
                raise L.ArgumentError("several sessions: give session= (one of %s)" % ", ".join(self.keys),
                                      "invalid argument", 6)
            return 0
        if isinstance(session, int):
            if not 0 <= session < len(self):
                raise L.ArgumentError("session %d out of range (%d sessions)" % (session, len(self)),
                                      "invalid argument", 6)
            return session
        i = lib.npred_loaders_find(self._h, L.cstr(session))
        if i < 0:
            raise L.ArgumentError("session %r not in the loaders (%s)" % (session, ", ".join(self.keys)),
                                  "invalid argument", 6)
        return i

    def _info(self, s):
        si = L.SessionInfo()
        lib.npred_loaders_session(self._h, s, ctypes.byref(si))
        return si

    @property
    def keys(self):
        return [self._info(s).data_key.decode() for s in range(len(self))]

    def session(self, session=None):
        """What a session holds after the neuron/image selection: a dict with data_key,
        n_neurons, unit_ids, neuron_idx, cell_motor_coordinates, image_shape,
        behavior_dim, pupil_dim, and per tier its trials and batch count."""
        s = self._index(session)
        si = self._info(s)
        n = si.n_neurons
        return {
            "data_key": si.data_key.decode(),
            "n_neurons": n,
            "unit_ids": L.copy_out(si.unit_ids, (n,), c_int64, np.int64),
            "neuron_idx": L.copy_out(si.neuron_idx, (n,), c_int64, np.int64),
            "cell_motor_coordinates": (L.copy_out(si.cell_motor_coordinates, (n, 3), L.c_double, np.float64)
                                       if si.cell_motor_coordinates else None),
            "image_shape": (si.img_c, si.img_h, si.img_w),
            "behavior_dim": si.behavior_dim,
            "pupil_dim": si.pupil_dim,
            "tiers": {t: {"enabled": bool(si.tier_enabled[i]),
                          "trials": L.copy_out(si.tier_idx[i], (si.tier_n[i],), c_int64, np.int64),
                          "batches": si.tier_batches[i]} for i, t in enumerate(L.TIERS)},
        }

    def normalizer(self, session=None):
        """The NeuroNormalizer constants of a session: None without normalize, else a
        dict with inputs_mean, inputs_std and the arrays response_precision (every
        neuron of the scan, before the selection), behavior_precision, eye_mean,
        eye_std (None where that field is not normalized)."""
        s = self._index(session)
        ni = L.NormalizerInfo()
        lib.npred_loaders_normalizer(self._h, s, ctypes.byref(ni))
        if not ni.active:
            return None
        si = self._info(s)
        info = L.DatasetInfo()
        lib.npred_dataset_get_info(si.dataset, ctypes.byref(info))
        beh = info.field_size[L.FIELDS.index("behavior")]
        eye = info.field_size[L.FIELDS.index("pupil_center")]
        arr = lambda p, n: L.copy_out(p, (n,), L.c_float, np.float32) if p else None  # noqa: E731
        return {"inputs_mean": float(ni.inputs_mean), "inputs_std": float(ni.inputs_std),
                "response_precision": arr(ni.response_precision, info.n_neurons),
                "behavior_precision": arr(ni.behavior_precision, beh),
                "eye_mean": arr(ni.eye_mean, eye), "eye_std": arr(ni.eye_std, eye)}

    def _new_batch(self):
        b = L.Batch()
        L.check(lib.npred_batch_init(ctypes.byref(b), self._h, 0))
        return b

    def get(self, trials, session=None):
        """The transformed trials (rows of the scan) of a session, as one batch."""
        s = self._index(session)
        t = np.ascontiguousarray(trials, dtype=np.int64).reshape(-1)
        b = L.Batch()
        L.check(lib.npred_batch_init(ctypes.byref(b), self._h, max(1, len(t))))
        try:
            L.check(lib.npred_loaders_get(self._h, s, t.ctypes.data_as(P(c_int64)), len(t), ctypes.byref(b)))
            return _batch_to_python(b)
        finally:
            lib.npred_batch_free(ctypes.byref(b))

    def _seed(self, seed):
        if seed is None:
            seed = self.config.get("seed")
        return 0 if seed is None else int(seed) & (2**64 - 1)

    def batches(self, tier="train", session=None, seed=None):
        """Iterate over one session's tier: train shuffled from an npred rng seeded
        with `seed` (default: the config's seed, else 0), as the C npred_loader_iter;
        the other tiers in ascending trial order."""
        s = self._index(session)
        ti = _tier_index(tier)
        rng = L.Rng()
        lib.npred_rng_seed(ctypes.byref(rng), self._seed(seed))
        it = ctypes.create_string_buffer(L.ITER_BYTES)
        yield from self._drain(lambda: lib.npred_loader_iter_begin(it, self._h, s, ti, ctypes.byref(rng)),
                               lib.npred_loader_iter_next, lib.npred_loader_iter_free, it)

    def cycle(self, tier="train", seed=None):
        """neuralpredictors LongCycler over all sessions of a tier (round robin, the
        training order of npred train), from an npred rng seeded with `seed`."""
        ti = _tier_index(tier)
        rng = L.Rng()
        lib.npred_rng_seed(ctypes.byref(rng), self._seed(seed))
        cy = ctypes.create_string_buffer(L.CYCLER_BYTES)
        yield from self._drain(lambda: lib.npred_cycler_begin(cy, self._h, ti, ctypes.byref(rng)),
                               lib.npred_cycler_next, lib.npred_cycler_free, cy)

    def _drain(self, begin, next_fn, free_fn, state):
        """The batches of an iterator or cycler `state` started by begin(), freed at the end."""
        b = self._new_batch()
        try:
            L.check(begin())
            try:
                has = c_int()
                while True:
                    L.check(next_fn(state, ctypes.byref(b), ctypes.byref(has)))
                    if not has.value:
                        break
                    yield _batch_to_python(b)
            finally:
                free_fn(state)
        finally:
            lib.npred_batch_free(ctypes.byref(b))

    def repeats(self, tier="test", session=None):
        """RepeatsBatchSampler groups: a list of trial arrays, one per frame_image_id
        (ascending ids)."""
        s = self._index(session)
        trials, offsets, n = P(c_int64)(), P(c_int64)(), c_int64()
        L.check(lib.npred_loaders_repeats(self._h, s, _tier_index(tier), ctypes.byref(trials),
                                          ctypes.byref(offsets), ctypes.byref(n)))
        try:
            off = L.copy_out(offsets, (n.value + 1,), c_int64, np.int64)
            tr = L.copy_out(trials, (int(off[-1]),), c_int64, np.int64)
        finally:
            L._libc.free(ctypes.cast(trials, c_void_p))
            L._libc.free(ctypes.cast(offsets, c_void_p))
        return [tr[off[i]:off[i + 1]] for i in range(n.value)]
