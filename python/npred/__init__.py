"""npred from Python: SENSORIUM datasets, neuralpredictors models, training,
evaluation and simulation, on the native library libnpred (ctypes + numpy).

    import npred
    ds = npred.Dataset("static21067-10-18-GrayImageNet-....zip")
    m = npred.Model.open("run/")
    rates = m.predict(images, session=ds.data_key)

See docs/python.md. The library is found in the repository's build/ folder, next
to an installed package, or at the path in the NPRED_LIBRARY environment variable."""
from ._lib import (ArgumentError, ConfigError, Error, FileError, FormatError, Interrupted, InvalidValueError,
                   ShapeError, UnsupportedError, lib_path, set_thread_count as set_threads,
                   thread_count as threads, version as __version__)
from .data import Batch, Dataset, Loaders
from .model import Model
from .video_model import VideoModel
from .insilico import mei, rf, tuning
from .train import Evaluation, TrainResult, evaluate, simulate, train
from .results import Score, ground_truth, score, submission
from .video_eval import VideoEvaluation
from .video_stream import Stream

TIERS = ("train", "validation", "test", "final_test")

__all__ = ["Dataset", "Loaders", "Batch", "Model", "VideoModel", "Stream", "train", "evaluate", "simulate", "mei", "rf", "tuning", "Evaluation", "TrainResult",
           "submission", "ground_truth", "score", "Score", "VideoEvaluation",
           "Error", "FileError", "FormatError", "ShapeError", "ConfigError", "InvalidValueError", "ArgumentError",
           "UnsupportedError", "Interrupted", "set_threads", "threads", "lib_path", "TIERS",
           "__version__"]
