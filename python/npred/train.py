"""Training (the SENSORIUM standard_trainer), evaluation and simulation."""
import ctypes
import json
import math
import os
import signal
import threading

import numpy as np

from . import _lib as L
from ._lib import c_int, c_void_p, lib
from .data import Loaders, _config_dict, _tier_index
from .model import Model

DEFAULT_SEED = 42
DEFAULT_DATASET = {"batch_size": 128, "scale": 0.25, "normalize": True}


def _run_interruptible(fn, stop_flag, errors):
    """Run fn() in a worker thread while the calling (main) thread waits. Ctrl-C
    (SIGINT) meanwhile only sets the library's interrupt flag, so the run stops
    cleanly after the current batch; the worker is always joined before this
    returns. Returns fn's status and whether SIGINT arrived."""
    result, interrupted = {}, []

    def work():
        result["status"] = fn()

    def on_sigint(sig, frame):
        interrupted.append(sig)
        stop_flag.value = 1

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        t = threading.Thread(target=work, name="npred-train", daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.1)
    finally:
        if main:
            signal.signal(signal.SIGINT, old)
    if errors:
        raise errors[0]
    return result.get("status", 7), bool(interrupted)


class TrainResult(dict):
    """What npred.train returns: model (Model, the best state), score (validation
    objective of the final model), best, epochs, stop (why training ended), out."""

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None


def train(data=None, model=None, trainer=None, dataset=None, out=None, seed=None, threads=None, progress=None,
          resume=False, init_core=None):
    """Train a model as `npred train` does (sensorium standard_trainer).

    data      list of scans (folders or .zip), one session each (default: the
              dataset config's "paths")
    model     model config: dict or JSON file (sensorium builder arguments)
    trainer   trainer config: dict or JSON file (standard_trainer arguments)
    dataset   loader config: dict or JSON file (static_loaders arguments);
              default {"batch_size": 128, "scale": 0.25, "normalize": true}
    out       run folder (model.safetensors, config.json, log.csv, state.safetensors),
              or None for no files
    seed      seed of the initialisation and training (default: the trainer's
              "seed", else 42); the same seed and threads give the same model as
              `npred train --seed`
    threads   OpenMP threads for this run (default: all)
    progress  callable(event: dict), called with {"event": "batch", epoch, batch,
              n_batches, data_key, size, loss, lr}, {"event": "epoch", epoch, lr,
              train_loss, objective, seconds, improved, adam_steps} and
              {"event": "message", "text": ...}; an exception it raises stops
              training and is re-raised
    resume    continue the run in `out` from its state.safetensors
    init_core start from the core of this model (run folder, .safetensors, .pth)

    Ctrl-C stops after the current batch and raises KeyboardInterrupt; the run
    folder keeps the last finished epoch (continue with resume=True).
    Returns a TrainResult (model, score, best, epochs, stop, out)."""
    jmodel = _config_dict(model, "model config") if model is not None else None
    jtrainer = _config_dict(trainer, "trainer config") if trainer is not None else None
    jdataset = _config_dict(dataset, "dataset config") if dataset is not None else None
    saved = None
    if resume:
        if out is None:
            raise L.ArgumentError("resume=True needs out= (the run folder)", "invalid argument", 6)
        saved = _config_dict(os.path.join(os.fspath(out), "config.json"), "run config")
    if jmodel is None:
        if saved is None or "model" not in saved:
            raise L.ArgumentError("model= (a model config) is required", "invalid argument", 6)
        jmodel = saved["model"]
    if jtrainer is None:
        if saved is None or "trainer" not in saved:
            raise L.ArgumentError("trainer= (a trainer config) is required", "invalid argument", 6)
        jtrainer = saved["trainer"]
    if jdataset is None:
        jdataset = saved["dataset"] if saved and "dataset" in saved else dict(DEFAULT_DATASET)
    if data is None and saved:
        data = saved.get("data")
    if seed is None and saved and isinstance(saved.get("seed"), (int, float)):
        seed = int(saved["seed"])
    if seed is None:
        seed = int(jtrainer["seed"]) if jtrainer.get("seed") is not None else DEFAULT_SEED
    jtrainer = dict(jtrainer)
    jtrainer["seed"] = int(seed)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise L.ArgumentError("threads=%r: expected a positive integer" % (threads,), "invalid argument", 6)

    tc = ctypes.create_string_buffer(L.TRAINER_CONFIG_BYTES)
    lib.npred_trainer_config_init(tc)
    L.check(lib.npred_trainer_config_parse(tc, json.dumps(jtrainer).encode(),
                                           L.cstr(trainer if isinstance(trainer, str) else "trainer config")),
            "trainer config")
    loaders = Loaders(paths=data, config=jdataset)
    model_text = json.dumps(jmodel).encode()
    mh = c_void_p()
    L.check(lib.npred_trainer_model_create(ctypes.byref(mh), loaders._h, model_text,
                                           L.cstr(model if isinstance(model, str) else "model config"), int(seed)),
            "model")
    m = Model(mh)
    if init_core is not None and not resume:
        src = Model.open(init_core, max_batch=1, image_size=m.input_shape[1:])
        try:
            if m.copy_parameters(src, "core.") == 0:
                raise L.ArgumentError("%s has no core tensor that this model has" % os.fspath(init_core),
                                      "invalid argument", 6)
        finally:
            src.close()
    th = c_void_p()
    L.check(lib.npred_trainer_create(ctypes.byref(th), m._h, loaders._h, tc, int(seed)), "trainer")
    try:
        if out is not None:
            run_cfg = {"data": loaders.paths, "seed": int(seed), "model": m.config, "dataset": loaders.config,
                       "trainer": json.loads(L.take_string(lib.npred_trainer_config_json(tc)))}
            if threads is not None:
                run_cfg["threads"] = threads
            L.check(lib.npred_trainer_set_run_dir(th, L.cstr(os.fspath(out)),
                                                  (json.dumps(run_cfg, indent=2) + "\n").encode()), "run folder")
            if resume:
                L.check(lib.npred_trainer_resume(th, L.cstr(os.path.join(os.fspath(out), "state.safetensors"))),
                        "resume")
        stop = c_int(0)
        errors = []

        def call(event):
            if progress is None or errors:
                return
            try:
                progress(event)
            except BaseException as e:  # stop the run and re-raise in the caller
                errors.append(e)
                stop.value = 1

        def on_batch(user, b):
            b = b.contents
            call({"event": "batch", "epoch": b.epoch, "batch": b.batch, "n_batches": b.n_batches,
                  "data_key": b.data_key.decode(), "size": b.size, "loss": b.loss, "lr": b.lr})

        def on_epoch(user, e):
            e = e.contents
            call({"event": "epoch", "epoch": e.epoch, "lr": e.lr, "train_loss": e.train_loss,
                  "objective": e.objective, "seconds": e.seconds, "improved": bool(e.improved),
                  "adam_steps": e.adam_steps})

        def on_message(user, msg):
            call({"event": "message", "text": msg.decode("utf-8", "replace")})

        cb = L.TrainerCallbacks(L.ON_BATCH(on_batch), L.ON_EPOCH(on_epoch), L.ON_MESSAGE(on_message), None,
                                ctypes.pointer(stop))
        lib.npred_trainer_set_callbacks(th, ctypes.byref(cb))
        res = L.TrainerResult()
        status = {}

        def run():
            if threads is not None:
                L.set_thread_count(threads)  # OpenMP threads are a per-thread setting
            st = lib.npred_trainer_run(th, ctypes.byref(res))
            status["error"] = L.error(st, "training") if st else None
            return st

        st, interrupted = _run_interruptible(run, stop, errors)
        if interrupted:
            raise KeyboardInterrupt("npred.train: interrupted; the run folder keeps the last finished epoch"
                                    + (" (continue with resume=True)" if out is not None else ""))
        if st:
            raise status["error"]
    finally:
        lib.npred_trainer_free(th)
    return TrainResult(model=m, score=res.score, best=res.best, epochs=res.epochs,
                       stop=L.STOP_REASONS[res.stop] if 0 <= res.stop < len(L.STOP_REASONS) else str(res.stop),
                       out=os.fspath(out) if out is not None else None)


# ---------------------------------------------------------------- evaluation
METRICS = ("single_trial_corr", "corr_to_average", "feve", "oracle", "fraction_oracle", "fraction_oracle_slope")
PER_NEURON = ("corr", "corr_avg", "fev", "feve", "oracle")


def _metrics(m):
    d = {k: getattr(m, k) for k in METRICS}
    d.update(n_neurons=m.n_neurons, n_trials=m.n_trials, n_images=m.n_images, n_fev_kept=m.n_fev_kept)
    return d


class Evaluation:
    """npred.evaluate's result.

    per_neuron   dict of (total neurons,) arrays over all sessions in order:
                 session, unit_id, corr (single-trial), corr_avg (to the average
                 over repeats), fev, feve, oracle (NaN where undefined)
    sessions     {data_key: {metric: value, ..., per-neuron arrays}}
    overall      the metrics pooled over every neuron
    to_dataframe()  per_neuron as a pandas DataFrame (needs pandas)"""

    def __init__(self, tier, sessions, overall, per_neuron):
        self.tier, self.sessions, self.overall, self.per_neuron = tier, sessions, overall, per_neuron

    def to_dataframe(self):
        import pandas as pd
        return pd.DataFrame(self.per_neuron)

    def __repr__(self):
        o = self.overall
        return ("npred.Evaluation(%s: %d neurons, single-trial correlation %.4f, correlation to average %.4f, "
                "FEVE %.4f)" % (self.tier, o["n_neurons"], o["single_trial_corr"], o["corr_to_average"], o["feve"]))


def _model_defaults(cfg, m):
    """The loader options a model implies where the config leaves them unset (as npred eval)."""
    c, h, w = m.input_shape
    bc = m.behavior_channels
    if "include_eye_position" not in cfg and m.has_shifter:
        cfg["include_eye_position"] = True
    if "include_behavior" not in cfg and (c == 4 or bc > 0):
        cfg["include_behavior"] = True
    if "add_behavior_as_channels" not in cfg and bc > 0 and c != 4:
        cfg["add_behavior_as_channels"] = False


def _rescale_size(n, scale):
    # skimage.transform.rescale: output size round(n * scale)
    return max(1, int(np.round(n * scale)))


def _eval_loaders(m, data, dataset, batch_size):
    """The loaders `npred eval` / `npred predict` open for model m: the dataset config
    (dict or JSON file; default batch_size), the loader options the model implies, and
    images scaled to the model's input size unless the config sets scale."""
    cfg = _config_dict(dataset, "dataset config")
    cfg.setdefault("batch_size", batch_size)
    _model_defaults(cfg, m)
    loaders = Loaders(paths=data, config=cfg)
    c, h, w = m.input_shape
    s0 = loaders.session(0)["image_shape"]
    if "scale" not in cfg and (s0[1] != h or s0[2] != w):
        scale = h / s0[1]
        for k in range(len(loaders)):
            ih, iw = loaders.session(k)["image_shape"][1:]
            if _rescale_size(ih, scale) != h or _rescale_size(iw, scale) != w:
                raise L.ShapeError("%s: images %dx%d cannot be scaled to the model's %dx%d"
                                   % (loaders.paths[k], ih, iw, h, w), "shape error", 3)
        cfg["scale"] = scale
        loaders = Loaders(paths=loaders.paths, config=cfg)
    return loaders


def evaluate(model, data=None, tier=None, dataset=None, batch_size=64):
    """SENSORIUM metrics of a model on a tier of one or more scans (as `npred eval`):
    per-neuron single-trial correlation, correlation to average, FEV, FEVE and
    oracle, per session and pooled. model: a Model or a path for Model.open; data:
    scans (default: the dataset config's "paths"); tier: default "test"; dataset:
    loader config (dict or JSON file); images are scaled to the model's input size
    unless it sets scale. Returns an Evaluation.

    A video model (VideoModel or its path): the 2023 kit's per-neuron correlation on
    whole trials of the tier (default "oracle") of movie scans, the loader arguments
    recorded with the model updated by dataset's; returns a VideoEvaluation."""
    from . import video_eval
    if video_eval.is_video_model(model):
        if batch_size != 64:
            raise L.ArgumentError("batch_size: a video model is evaluated one whole trial at a time",
                                  "invalid argument", 6)
        return video_eval.evaluate(model, data, "oracle" if tier is None else tier, dataset)
    tier = "test" if tier is None else tier
    own = not isinstance(model, Model)
    m = Model.open(model, max_batch=batch_size) if own else model
    try:
        ti = _tier_index(tier)
        loaders = _eval_loaders(m, data, dataset, batch_size)
        res = L.EvalResults()
        try:
            L.check(lib.npred_evaluate(m._h, loaders._h, ti, ctypes.byref(res)), "evaluate")
            sessions, cols = {}, {k: [] for k in ("session", "unit_id") + PER_NEURON}
            for s in range(res.n_sessions):
                es = res.sessions[s]
                key = es.data_key.decode()
                n = es.m.n_neurons
                d = _metrics(es.m)
                for k in PER_NEURON:
                    d[k] = L.copy_out(getattr(es, k), (n,), L.c_double, np.float64)
                    cols[k].append(d[k])
                d["unit_ids"] = loaders.session(s)["unit_ids"]
                cols["unit_id"].append(d["unit_ids"])
                cols["session"].append(np.array([key] * n))
                sessions[key] = d
            per_neuron = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
            return Evaluation(L.TIERS[ti], sessions, _metrics(res.overall), per_neuron)
        finally:
            lib.npred_eval_results_free(ctypes.byref(res))
    finally:
        if own:
            m.close()


# ---------------------------------------------------------------- simulation
_NOISE = {"poisson": 0, "gamma": 1, "none": 2}


def simulate(out, sessions=1, neurons=1000, trials=5000, val_fraction=0.1, test_images=100, test_repeats=10,
             final_test_images=0, height=144, width=256, downsample=4, seed=1, animal_id=90000, rate_scale=2.0,
             noise="poisson", gamma_shape=2.0, modulate=False, tree=True, zip=False, force=False, progress=None,
             shared_neurons=0.0):
    """Write a simulated SENSORIUM dataset with a known ground truth (as `npred
    simulate`; docs/simulate.md). Returns the paths of the scans written (the
    .zip files when zip=True and tree=False, else the folders)."""
    p = lib.npred_sim_default_params()
    if noise not in _NOISE:
        raise L.ArgumentError("noise=%r: expected poisson, gamma or none" % (noise,), "invalid argument", 6)
    for name, v in (("n_sessions", sessions), ("n_neurons", neurons), ("n_trials", trials),
                    ("n_test_images", test_images), ("n_test_repeats", test_repeats),
                    ("n_final_test_images", final_test_images), ("height", height), ("width", width),
                    ("downsample", downsample), ("animal_id", animal_id)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise L.ArgumentError("%s=%r: expected an integer" % (name, v), "invalid argument", 6)
        if not -2**31 <= v < 2**31:
            raise L.ArgumentError("%s=%r: out of range" % (name, v), "invalid argument", 6)
        setattr(p, name, int(v))
    for name, v in (("val_fraction", val_fraction), ("rate_scale", rate_scale), ("gamma_shape", gamma_shape),
                    ("shared_neurons", shared_neurons)):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise L.ArgumentError("%s=%r: expected a finite number" % (name, v), "invalid argument", 6)
        setattr(p, name, float(v))
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise L.ArgumentError("seed=%r: expected an integer >= 0" % (seed,), "invalid argument", 6)
    p.seed = int(seed)
    p.noise = _NOISE[noise]
    p.modulate, p.write_tree, p.write_zip, p.force = int(bool(modulate)), int(bool(tree)), int(bool(zip)), \
        int(bool(force))
    L.check(lib.npred_sim_validate(ctypes.byref(p)), "simulate")
    errors = []

    def prog(user, session, done, total):
        if progress is None or errors:
            return 1 if errors else 0
        try:
            progress(session, done, total)
            return 0
        except BaseException as e:
            errors.append(e)
            return 1

    cb = L.SIM_PROGRESS(prog)
    st = lib.npred_simulate(ctypes.byref(p), L.cstr(os.fspath(out)), cb, None)
    if errors:
        raise errors[0]
    L.check(st, "simulate")
    paths = []
    buf = ctypes.create_string_buffer(512)
    for s in range(p.n_sessions):
        lib.npred_sim_tree_name(ctypes.byref(p), s, buf, len(buf))
        name = buf.value.decode()
        paths.append(os.path.join(os.fspath(out), name + (".zip" if zip and not tree else "")))
    return paths
