"""SENSORIUM 2022 submission files and their leaderboard scores (npred/results.h):
the kit's generate_submission_file, generate_ground_truth_file and evaluate."""
import ctypes
import os

from . import _lib as L
from ._lib import c_void_p, lib
from .data import Loaders, _config_dict, _tier_index
from .model import Model
from .train import _eval_loaders
from . import video_eval as _video
from .video_eval import is_video_model


class Score(dict):
    """npred.score's result: single_trial_corr ("Single Trial Correlation"),
    corr_to_average ("Correlation to Average"), feve ("FEVE", the mean over the
    n_fev_kept neurons with FEV >= 0.15), n_trials, n_images, n_neurons. Keys are
    also attributes."""

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None

    def __repr__(self):
        return ("npred.Score(%d trials, %d neurons: single-trial correlation %.6f, correlation to average %.6f, "
                "FEVE %.6f over %d neurons)" % (self["n_trials"], self["n_neurons"], self["single_trial_corr"],
                                                 self["corr_to_average"], self["feve"], self["n_fev_kept"]))


def _submission_tier(tier):
    ti = _tier_index(tier)
    if L.TIERS[ti] not in ("test", "final_test"):
        raise L.ArgumentError("tier %r: a submission file is for tier test or final_test" % (tier,),
                              "invalid argument", 6)
    return ti


def _one_scan(loaders):
    if len(loaders) != 1:
        raise L.ArgumentError("a submission file is for one scan; data lists %d (%s)"
                              % (len(loaders), ", ".join(map(str, loaders.paths))), "invalid argument", 6)


def _csv(model_handle, loaders, ti, path, what):
    out = c_void_p()
    L.check(lib.npred_submission_csv(ctypes.byref(out), model_handle, loaders._h, 0, ti), what)
    text = L.take_string(out.value)
    if path is not None:
        b = text.encode("utf-8")
        L.check(lib.npred_write_atomic(L.cstr(os.fspath(path)), b, len(b)), what)
    return text


def submission(model, data=None, tier=None, dataset=None, path=None, batch_size=64):
    """The submission file of one scan's tier, as `npred predict --submission` and
    the kit's generate_submission_file: CSV text with the columns trial_indices,
    image_ids, prediction, neuron_ids, one row per trial of the tier (the model's
    eval-mode predictions). model: a Model or a path for Model.open; data: the scan
    (default: the dataset config's "paths", which must list one); dataset: loader
    config (dict or JSON file); tier: "test" (default) or "final_test". Returns the
    text; with path, also writes it there atomically.

    A video model (VideoModel or its path): the 2023 kit's generate_submission, the
    Parquet file (brotli) at path (required) with one row per trial of the tier of
    every scan in data (default tier "live_test_main"), whole trials, the loader
    arguments recorded with the model updated by dataset's; returns the rows written."""
    if is_video_model(model):
        if batch_size != 64:
            raise L.ArgumentError("batch_size: a video model predicts one whole trial at a time",
                                  "invalid argument", 6)
        return _video.submission(model, data, "live_test_main" if tier is None else tier, dataset, path)
    ti = _submission_tier("test" if tier is None else tier)
    own = not isinstance(model, Model)
    m = Model.open(model, max_batch=batch_size) if own else model
    try:
        loaders = _eval_loaders(m, data, dataset, batch_size)
        _one_scan(loaders)
        return _csv(m._h, loaders, ti, path, "submission")
    finally:
        if own:
            m.close()


def ground_truth(data=None, tier="test", dataset=None, path=None):
    """The ground-truth file of one scan's tier, as `npred predict --ground-truth`
    and the kit's generate_ground_truth_file: CSV text with the columns
    trial_indices, image_ids, responses, neuron_ids (the loader's responses,
    normalized when the dataset config normalizes, as in the kit). Returns the
    text; with path, also writes it there atomically."""
    ti = _submission_tier(tier)
    loaders = Loaders(paths=data, config=_config_dict(dataset, "dataset config"))
    _one_scan(loaders)
    return _csv(None, loaders, ti, path, "ground truth")


def _is_text(x):
    return isinstance(x, (bytes, bytearray)) or (isinstance(x, str) and "\n" in x)


def _text_arg(x, name):
    b = bytes(x) if isinstance(x, (bytes, bytearray)) else x.encode("utf-8")
    return b, ("<%s text>" % name).encode()


def score(submission, truth):
    """The kit's evaluate(submission, ground_truth), as `npred score`: trials are
    matched by trial_indices and neurons by neuron_ids (in any order). Each
    argument is a file path (str or os.PathLike) or the file's text (bytes, or a
    str holding a line break, such as npred.submission returns). Returns a Score.
    A malformed file raises FormatError naming the file and line."""
    for x, name in ((submission, "submission"), (truth, "truth")):
        if not (_is_text(x) or isinstance(x, (str, os.PathLike))):
            raise L.ArgumentError("%s=%r: expected a path or the file's text" % (name, type(x).__name__),
                                  "invalid argument", 6)
    r = L.Score()
    if _is_text(submission) or _is_text(truth):
        texts = []
        for x, name in ((submission, "submission"), (truth, "truth")):
            if _is_text(x):
                texts.append(_text_arg(x, name))
            else:
                try:
                    with open(x, "rb") as f:
                        texts.append((f.read(), L.cstr(os.fspath(x))))
                except OSError as e:
                    raise L.FileError("score: %s: %s" % (os.fspath(x), e.strerror or e), "io error", 1) from None
        (s, sn), (t, tn) = texts
        L.check(lib.npred_submission_score_text(s, len(s), sn, t, len(t), tn, ctypes.byref(r)), "score")
    else:
        L.check(lib.npred_submission_score(L.cstr(os.fspath(submission)), L.cstr(os.fspath(truth)),
                                           ctypes.byref(r)), "score")
    return Score({k: getattr(r, k) for k, _ in L.Score._fields_})
