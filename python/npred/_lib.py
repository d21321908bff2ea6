"""Low-level access to libnpred through ctypes: finding the library, the C
prototypes of the public npred_* functions the package uses, mirrors of the
public structs it reads, and the status -> exception mapping.

Only this module knows C types; the rest of the package works with numpy arrays
and Python values."""
import ctypes
import ctypes.util
import os

import numpy as np

c_int, c_int64, c_uint64, c_size_t = ctypes.c_int, ctypes.c_int64, ctypes.c_uint64, ctypes.c_size_t
c_float, c_double, c_char_p, c_void_p = ctypes.c_float, ctypes.c_double, ctypes.c_char_p, ctypes.c_void_p
P = ctypes.POINTER

ENV_VAR = "NPRED_LIBRARY"


# ---------------------------------------------------------------- errors
class Error(Exception):
    """A failed npred call. `status` is the C status name ("io error", ...),
    `code` its number; the message is npred_last_error()."""

    def __init__(self, message, status="error", code=None):
        super().__init__(message)
        self.status = status
        self.code = code


class FileError(Error, OSError):
    pass


class FormatError(Error, ValueError):
    pass


class ShapeError(Error, ValueError):
    pass


class ConfigError(Error, ValueError):
    pass


class InvalidValueError(Error, ValueError):
    pass


class ArgumentError(Error, ValueError):
    pass


class UnsupportedError(Error, NotImplementedError):
    pass


class Interrupted(Error):
    pass


# index = npred_status value
_EXC = [None, FileError, FormatError, ShapeError, ConfigError, InvalidValueError, ArgumentError, MemoryError,
        UnsupportedError, Interrupted]
NPRED_ERR_INTERRUPTED = 9


# ---------------------------------------------------------------- finding the library
def _candidates():
    env = os.environ.get(ENV_VAR)
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    # in place: <repo>/python/npred -> <repo>/build
    yield os.path.join(here, "..", "..", "build", "libnpred.so")
    # installed: <prefix>/lib/python3/dist-packages/npred -> <prefix>/lib
    for up in (("..", "..", ".."), ("..", "..", "..", "..")):
        for name in ("libnpred.so.0", "libnpred.so"):
            yield os.path.join(here, *up, name)
    found = ctypes.util.find_library("npred")
    if found:
        yield found
    yield "libnpred.so.0"


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path)
            continue
        try:
            return ctypes.CDLL(os.path.normpath(path) if os.sep in path else path), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("npred: cannot find libnpred.so; build it with `make` or set %s to its path. Tried: %s"
                      % (ENV_VAR, "; ".join(tried)))


lib, lib_path = _load()
_libc = ctypes.CDLL(None)
_libc.free.argtypes = [c_void_p]
_libc.free.restype = None


def _fn(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_fn("npred_last_error", c_char_p)
_fn("npred_status_str", c_char_p, c_int)
_fn("npred_clear_error", None)
_fn("npred_version", c_char_p)
version = lib.npred_version().decode()


def last_error():
    return (lib.npred_last_error() or b"").decode("utf-8", "replace")


def error(status, context=None):
    """The exception for a failed call (status != 0)."""
    msg = last_error() or lib.npred_status_str(status).decode()
    if context:
        msg = "%s: %s" % (context, msg)
    cls = _EXC[status] if 0 < status < len(_EXC) else Error
    if cls is MemoryError:
        return MemoryError(msg)
    return cls(msg, lib.npred_status_str(status).decode(), status)


def check(status, context=None):
    if status != 0:
        raise error(status, context)


def take_string(ptr):
    """A malloc'ed char * from the library as str; frees it."""
    if not ptr:
        raise error(7 if not last_error() else 6)
    try:
        return ctypes.string_at(ptr).decode("utf-8")
    finally:
        _libc.free(ptr)


def cstr(s):
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    return os.fsencode(s) if isinstance(s, os.PathLike) else str(s).encode("utf-8")


class Owned:
    """A library object freed with `free(handle)` when the last reference goes."""

    def __init__(self, handle, free):
        self.handle, self._free = handle, free

    def __del__(self):
        if self.handle:
            self._free(self.handle)
            self.handle = None


# ---------------------------------------------------------------- base
class Rng(ctypes.Structure):
    _fields_ = [("s", c_uint64 * 4), ("has_spare", c_int), ("spare", c_double)]


_fn("npred_rng_seed", None, P(Rng), c_uint64)

# ---------------------------------------------------------------- npy
NPY_MAXDIM = 16
# npred_dtype -> numpy dtype (strings handled separately)
DTYPES = {0: np.bool_, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64, 5: np.uint8, 6: np.uint16,
          7: np.uint32, 8: np.uint64, 9: np.float16, 10: np.float32, 11: np.float64}
DT_STR_U, DT_STR_S = 12, 13


class Array(ctypes.Structure):
    _fields_ = [("dtype", c_int), ("ndim", c_int), ("shape", c_int64 * NPY_MAXDIM), ("itemsize", c_size_t),
                ("count", c_size_t), ("data", c_void_p)]


def array_to_numpy(a):
    """Copy of an npred_array (numeric or string) as a numpy array."""
    shape = tuple(a.shape[i] for i in range(a.ndim))
    if a.dtype == DT_STR_U:
        dt = np.dtype("=U%d" % max(1, a.itemsize // 4))
    elif a.dtype == DT_STR_S:
        dt = np.dtype("S%d" % max(1, a.itemsize))
    else:
        dt = np.dtype(DTYPES[a.dtype])
    nbytes = a.count * a.itemsize
    raw = ctypes.string_at(a.data, nbytes) if nbytes else b""
    if a.itemsize == 0:
        return np.zeros(shape, dt)
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


# ---------------------------------------------------------------- data
TIERS = ("train", "validation", "test", "final_test")
FIELDS = ("images", "responses", "behavior", "pupil_center")
N_TIERS, N_FIELDS = 4, 4


class DatasetInfo(ctypes.Structure):
    _fields_ = [("path", c_char_p), ("data_key", c_char_p), ("is_zip", c_int), ("n_trials", c_int64),
                ("n_neurons", c_int64), ("has_field", c_int * N_FIELDS), ("field_size", c_int64 * N_FIELDS),
                ("img_c", c_int), ("img_h", c_int), ("img_w", c_int), ("img_min", c_float), ("img_max", c_float),
                ("tier_count", c_int64 * N_TIERS)]


class DatasetStats(ctypes.Structure):
    _fields_ = [("present", c_int), ("count", c_size_t), ("mean", P(c_float)), ("std", P(c_float)),
                ("min", P(c_float)), ("max", P(c_float)), ("median", P(c_float))]


class SessionInfo(ctypes.Structure):
    _fields_ = [("data_key", c_char_p), ("dataset", c_void_p), ("n_neurons", c_int64), ("neuron_idx", P(c_int64)),
                ("unit_ids", P(c_int64)), ("cell_motor_coordinates", P(c_double)), ("img_c", c_int),
                ("img_h", c_int), ("img_w", c_int), ("behavior_dim", c_int), ("pupil_dim", c_int),
                ("tier_enabled", c_int * N_TIERS), ("tier_n", c_int64 * N_TIERS),
                ("tier_idx", P(c_int64) * N_TIERS), ("tier_batches", c_int64 * N_TIERS),
                ("response_precision_threshold", c_float)]


class Batch(ctypes.Structure):
    _fields_ = [("session", c_int), ("data_key", c_char_p), ("n", c_int64), ("capacity", c_int64), ("c", c_int),
                ("h", c_int), ("w", c_int), ("n_neurons", c_int64), ("images", P(c_float)),
                ("responses", P(c_float)), ("behavior", P(c_float)), ("pupil_center", P(c_float)),
                ("behavior_dim", c_int), ("pupil_dim", c_int), ("n_info", c_size_t), ("info_names", P(c_char_p)),
                ("info", P(P(c_float))), ("trials", P(c_int64))]


class NormalizerInfo(ctypes.Structure):
    _fields_ = [("active", c_int), ("inputs_mean", c_float), ("inputs_std", c_float),
                ("response_precision", P(c_float)), ("behavior_precision", P(c_float)), ("eye_mean", P(c_float)),
                ("eye_std", P(c_float)), ("images", c_int), ("responses", c_int), ("behavior", c_int),
                ("pupil_center", c_int)]


# Structs the package only passes by pointer: opaque, generously sized buffers
# (tests/python check that the C sizes fit).
LOADER_CONFIG_BYTES = 4096
ITER_BYTES = 256
CYCLER_BYTES = 256
TRAINER_CONFIG_BYTES = 1024

_fn("npred_tier_name", c_char_p, c_int)
_fn("npred_dataset_open", c_int, P(c_void_p), c_char_p, c_char_p)
_fn("npred_dataset_free", None, c_void_p)
_fn("npred_dataset_get_info", None, c_void_p, P(DatasetInfo))
_fn("npred_dataset_field", P(c_float), c_void_p, c_int)
_fn("npred_dataset_get_stats", None, c_void_p, c_int, P(DatasetStats))
_fn("npred_dataset_trial_info", P(Array), c_void_p, c_char_p)
_fn("npred_dataset_neuron_info", P(Array), c_void_p, c_char_p)
_fn("npred_dataset_trial_info_names", c_size_t, c_void_p, P(P(c_char_p)))
_fn("npred_dataset_neuron_info_names", c_size_t, c_void_p, P(P(c_char_p)))
_fn("npred_dataset_tiers", P(c_int), c_void_p)
_fn("npred_dataset_image_ids", P(c_int64), c_void_p)

_fn("npred_loader_config_init", None, c_void_p)
_fn("npred_loader_config_free", None, c_void_p)
_fn("npred_loader_config_parse", c_int, c_void_p, c_char_p, P(P(c_char_p)), P(c_size_t))
_fn("npred_loader_paths_free", None, P(c_char_p), c_size_t)
_fn("npred_loaders_open", c_int, P(c_void_p), P(c_char_p), c_size_t, c_void_p)
_fn("npred_loaders_free", None, c_void_p)
_fn("npred_loaders_count", c_size_t, c_void_p)
_fn("npred_loaders_session", None, c_void_p, c_size_t, P(SessionInfo))
_fn("npred_loaders_find", c_int, c_void_p, c_char_p)
_fn("npred_loaders_normalizer", None, c_void_p, c_size_t, P(NormalizerInfo))
_fn("npred_batch_init", c_int, P(Batch), c_void_p, c_int64)
_fn("npred_batch_free", None, P(Batch))
_fn("npred_loaders_get", c_int, c_void_p, c_size_t, P(c_int64), c_int64, P(Batch))
_fn("npred_loader_iter_begin", c_int, c_void_p, c_void_p, c_size_t, c_int, P(Rng))
_fn("npred_loader_iter_next", c_int, c_void_p, P(Batch), P(c_int))
_fn("npred_loader_iter_free", None, c_void_p)
_fn("npred_cycler_begin", c_int, c_void_p, c_void_p, c_int, P(Rng))
_fn("npred_cycler_next", c_int, c_void_p, P(Batch), P(c_int))
_fn("npred_cycler_len", c_int64, c_void_p)
_fn("npred_cycler_free", None, c_void_p)
_fn("npred_loaders_repeats", c_int, c_void_p, c_size_t, c_int, P(P(c_int64)), P(P(c_int64)), P(c_int64))

# ---------------------------------------------------------------- model


class ModelSession(ctypes.Structure):
    _fields_ = [("key", c_char_p), ("n_neurons", c_int), ("coords", P(c_double)), ("coord_dims", c_int),
                ("mean_activity", P(c_float)), ("match_ids", P(c_int64))]


_fn("npred_model_create", c_int, P(c_void_p), c_char_p, c_char_p, c_int, c_int, c_int, P(ModelSession), c_int, c_int,
    c_uint64)
_fn("npred_model_plan", c_int, P(c_void_p), c_char_p, c_char_p, c_int, c_int, c_int, P(ModelSession), c_int)
_fn("npred_model_config_check", c_int, c_char_p, c_char_p)
_fn("npred_model_open", c_int, P(c_void_p), c_char_p, c_int, c_int, c_int)
_fn("npred_model_param_count", c_size_t, c_void_p, c_char_p)
_fn("npred_model_buffer_count", c_size_t, c_void_p)
_fn("npred_model_pupil_channels", c_int, c_void_p)
_fn("npred_model_readout_repr", c_void_p, c_void_p, c_int)
_fn("npred_model_save", c_int, c_void_p, c_char_p)
_fn("npred_model_save_file", c_int, c_void_p, c_char_p)
_fn("npred_model_free", None, c_void_p)
_fn("npred_model_copy_parameters", c_int, c_void_p, c_void_p, c_char_p, P(c_int))
_fn("npred_model_predict", c_int, c_void_p, c_char_p, P(c_float), c_int, P(c_float), P(c_float), P(c_float))
_fn("npred_model_n_sessions", c_int, c_void_p)
_fn("npred_model_session_key", c_char_p, c_void_p, c_int)
_fn("npred_model_session_neurons", c_int, c_void_p, c_int)
_fn("npred_model_session_index", c_int, c_void_p, c_char_p)
_fn("npred_model_input_shape", None, c_void_p, P(c_int), P(c_int), P(c_int))
_fn("npred_model_core_output_shape", None, c_void_p, P(c_int), P(c_int), P(c_int))
_fn("npred_model_has_shifter", c_int, c_void_p)
_fn("npred_model_behavior_channels", c_int, c_void_p)
_fn("npred_model_readout_positions", c_int, c_void_p, c_int, P(c_float))
_fn("npred_model_config_json", c_void_p, c_void_p)
_fn("npred_model_describe", c_void_p, c_void_p)

# ---------------------------------------------------------------- training


class TrainerBatchInfo(ctypes.Structure):
    _fields_ = [("epoch", c_int64), ("batch", c_int64), ("n_batches", c_int64), ("data_key", c_char_p),
                ("size", c_int64), ("loss", c_double), ("lr", c_double)]


class TrainerEpochInfo(ctypes.Structure):
    _fields_ = [("epoch", c_int64), ("lr", c_double), ("train_loss", c_double), ("objective", c_double),
                ("seconds", c_double), ("improved", c_int), ("adam_steps", c_int64)]


ON_BATCH = ctypes.CFUNCTYPE(None, c_void_p, P(TrainerBatchInfo))
ON_EPOCH = ctypes.CFUNCTYPE(None, c_void_p, P(TrainerEpochInfo))
ON_MESSAGE = ctypes.CFUNCTYPE(None, c_void_p, c_char_p)


class TrainerCallbacks(ctypes.Structure):
    _fields_ = [("on_batch", ON_BATCH), ("on_epoch", ON_EPOCH), ("on_message", ON_MESSAGE), ("user", c_void_p),
                ("interrupt", P(c_int))]


class TrainerResult(ctypes.Structure):
    _fields_ = [("score", c_double), ("epochs", c_int64), ("best", c_double), ("stop", c_int)]


STOP_REASONS = ("running", "patience exhausted", "max_iter reached", "objective not finite")

_fn("npred_trainer_config_init", None, c_void_p)
_fn("npred_trainer_config_parse", c_int, c_void_p, c_char_p, c_char_p)
_fn("npred_trainer_config_json", c_void_p, c_void_p)
_fn("npred_trainer_create", c_int, P(c_void_p), c_void_p, c_void_p, c_void_p, c_uint64)
_fn("npred_trainer_free", None, c_void_p)
_fn("npred_trainer_set_callbacks", None, c_void_p, P(TrainerCallbacks))
_fn("npred_trainer_set_run_dir", c_int, c_void_p, c_char_p, c_char_p)
_fn("npred_trainer_resume", c_int, c_void_p, c_char_p)
_fn("npred_trainer_run", c_int, c_void_p, P(TrainerResult))
_fn("npred_trainer_model_create", c_int, P(c_void_p), c_void_p, c_char_p, c_char_p, c_uint64)

# ---------------------------------------------------------------- evaluation


class EvalMetrics(ctypes.Structure):
    _fields_ = [("n_neurons", c_int64), ("n_trials", c_int64), ("n_images", c_int64), ("n_fev_kept", c_int64),
                ("single_trial_corr", c_double), ("corr_to_average", c_double), ("feve", c_double),
                ("oracle", c_double), ("fraction_oracle", c_double), ("fraction_oracle_slope", c_double)]


class EvalSession(ctypes.Structure):
    _fields_ = [("data_key", ctypes.c_char * 64), ("m", EvalMetrics), ("corr", P(c_double)),
                ("corr_avg", P(c_double)), ("fev", P(c_double)), ("feve", P(c_double)), ("oracle", P(c_double)),
                ("unit_ids", P(c_int64)), ("resp_mean", P(c_double)), ("resp_var", P(c_double)),
                ("readout_xy", P(ctypes.c_float))]


class EvalResults(ctypes.Structure):
    _fields_ = [("tier", c_int), ("n_sessions", c_int), ("sessions", P(EvalSession)), ("overall", EvalMetrics)]


_fn("npred_evaluate", c_int, c_void_p, c_void_p, c_int, P(EvalResults))
_fn("npred_eval_results_free", None, P(EvalResults))

# ---------------------------------------------------------------- submission files (npred/results.h)


class Score(ctypes.Structure):
    _fields_ = [("n_trials", c_int64), ("n_neurons", c_int64), ("n_images", c_int64), ("n_fev_kept", c_int64),
                ("single_trial_corr", c_double), ("corr_to_average", c_double), ("feve", c_double)]


_fn("npred_submission_csv", c_int, P(c_void_p), c_void_p, c_void_p, c_size_t, c_int)
_fn("npred_submission_score", c_int, c_char_p, c_char_p, P(Score))
_fn("npred_submission_score_text", c_int, c_char_p, c_size_t, c_char_p, c_char_p, c_size_t, c_char_p, P(Score))
_fn("npred_write_atomic", c_int, c_char_p, c_void_p, c_size_t)

# ---------------------------------------------------------------- simulation


class SimParams(ctypes.Structure):
    _fields_ = [("n_sessions", c_int), ("n_neurons", c_int), ("n_trials", c_int), ("val_fraction", c_double),
                ("n_test_images", c_int), ("n_test_repeats", c_int), ("n_final_test_images", c_int),
                ("height", c_int), ("width", c_int), ("downsample", c_int), ("seed", c_uint64),
                ("animal_id", c_int), ("rate_scale", c_double), ("noise", c_int), ("gamma_shape", c_double),
                ("modulate", c_int), ("write_tree", c_int), ("write_zip", c_int), ("force", c_int),
                ("shared_neurons", c_double)]


SIM_PROGRESS = ctypes.CFUNCTYPE(c_int, c_void_p, c_int, c_int64, c_int64)
_fn("npred_sim_default_params", SimParams)
_fn("npred_sim_validate", c_int, P(SimParams))
_fn("npred_sim_tree_name", None, P(SimParams), c_int, c_char_p, c_size_t)
_fn("npred_sim_data_key", None, P(SimParams), c_int, c_char_p, c_size_t)
_fn("npred_simulate", c_int, P(SimParams), c_char_p, SIM_PROGRESS, c_void_p)


# ---------------------------------------------------------------- numpy helpers
def as_f32(x, name, ndim=None):
    """x as a C-contiguous float32 array (no copy when it already is one)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if ndim is not None and a.ndim != ndim:
        raise ShapeError("%s: expected %d dimensions, got shape %s" % (name, ndim, a.shape), "shape error", 3)
    return a


def fptr(a):
    return None if a is None else a.ctypes.data_as(P(c_float))


def view(ptr, shape, ctype, owner, dtype):
    """A read-only numpy array over library memory `ptr`, keeping `owner` alive."""
    n = int(np.prod(shape)) if len(shape) else 1
    if not ptr or n == 0:
        return np.zeros(shape, dtype)
    buf = (ctype * n).from_address(ctypes.addressof(ptr.contents))
    buf._npred_owner = owner  # the array's base chain keeps the owner alive
    a = np.frombuffer(buf, dtype=dtype).reshape(shape)
    a.flags.writeable = False
    return a


def copy_out(ptr, shape, ctype, dtype):
    n = int(np.prod(shape)) if len(shape) else 1
    if not ptr or n == 0:
        return np.zeros(shape, dtype)
    return np.ctypeslib.as_array(ptr, shape=(n,)).astype(dtype, copy=True).reshape(shape)


# ---------------------------------------------------------------- threads
_fn("npred_set_threads", c_int, c_int)
_fn("npred_threads", c_int)


def set_thread_count(n):
    """OpenMP threads used by npred calls made from the calling Python thread."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ArgumentError("threads=%r: expected a positive integer" % (n,), "invalid argument", 6)
    check(lib.npred_set_threads(n))


def thread_count():
    """OpenMP threads npred calls from the calling Python thread use."""
    return lib.npred_threads()
