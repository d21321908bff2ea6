"""npred.train / npred.evaluate / npred.simulate: the same files and numbers as
the C API (`npred train`, `npred simulate`, tests/pyref.c eval) bit for bit;
progress callbacks; Ctrl-C stops cleanly and resume finishes the same run;
errors are exceptions."""
import json
import os
import shutil
import signal
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import NPRED_BIN, PYREF_BIN, check, check_equal, check_raises, run, sh, summary, tmpdir

import npred

MODEL = {"layers": 2, "input_kern": 5, "hidden_kern": 3, "hidden_channels": 6, "depth_separable": True,
         "stack": -1, "pad_input": False, "gamma_input": 1.0, "gamma_readout": 0.01, "init_sigma": 0.1,
         "init_mu_range": 0.3, "gauss_type": "full",
         "grid_mean_predictor": {"type": "cortex", "input_dimensions": 2, "hidden_layers": 1, "hidden_features": 6,
                                 "final_tanh": True}, "shifter": False}
TRAINER = {"max_iter": 2, "verbose": False, "lr_init": 0.005}
DATASET = {"batch_size": 16, "normalize": True}
SIM = dict(sessions=2, neurons=20, trials=80, test_images=4, test_repeats=3, height=36, width=64, downsample=2,
           seed=3)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    dt = {"F32": np.float32, "I64": np.int64}
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], dt[v["dtype"]]).reshape(v["shape"])
            for k, v in header.items()}, meta


def check_same_tensors(a, b, what):
    ta, ma = read_safetensors(a)
    tb, mb = read_safetensors(b)
    check(sorted(ta) == sorted(tb) and len(ta) > 10, "%s: tensor names differ" % what)
    for k in ta:
        if k in tb:
            check_equal(ta[k], tb[k], "%s: %s" % (what, k))
    check(ma == mb, "%s: metadata differs" % what)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def test_simulate_equals_cli():
    """npred.simulate writes the same bytes as `npred simulate`."""
    a, b = os.path.join(TMP, "sim_py"), os.path.join(TMP, "sim_c")
    paths = npred.simulate(a, sessions=1, neurons=10, trials=20, test_images=2, test_repeats=2, height=16,
                           width=32, downsample=2, seed=9, zip=True)
    sh(NPRED_BIN, "simulate", "--out", b, "--sessions", 1, "--neurons", 10, "--trials", 20, "--test-images", 2,
       "--test-repeats", 2, "--height", 16, "--width", 32, "--downsample", 2, "--seed", 9, "--zip", "--quiet")
    check(len(paths) == 1 and os.path.isdir(paths[0]), "paths %s" % paths)
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    files_c = sorted(os.path.relpath(os.path.join(d, f), b) for d, _, fs in os.walk(b) for f in fs)
    check(files == files_c and len(files) > 50, "file lists differ (%d vs %d)" % (len(files), len(files_c)))
    differ = [f for f in files if f in files_c and open(os.path.join(a, f), "rb").read() !=
              open(os.path.join(b, f), "rb").read()]
    check(not differ, "files differ: %s" % differ[:5])
    check(npred.Dataset(paths[0]).n_neurons == 10, "simulated dataset opens")
    check_raises(npred.ArgumentError, lambda: npred.simulate(os.path.join(TMP, "x"), neurons=0), "neurons")
    check_raises(npred.ArgumentError, lambda: npred.simulate(os.path.join(TMP, "x"), noise="loud"), "loud")


def test_train_equals_cli():
    """npred.train == `npred train` with the same seed and threads: identical
    model.safetensors tensors and metadata; the returned model is the saved one."""
    events = []
    r = npred.train(data=DATA, model=MODEL, trainer=TRAINER, dataset=DATASET, out=RUN_PY, seed=7, threads=1,
                    progress=events.append)
    d = os.path.join(TMP, "cfg")
    os.makedirs(d, exist_ok=True)
    sh(NPRED_BIN, "train", "--data", *DATA, "--model", write_json(os.path.join(d, "m.json"), MODEL), "--trainer",
       write_json(os.path.join(d, "t.json"), TRAINER), "--dataset", write_json(os.path.join(d, "d.json"), DATASET),
       "--out", RUN_C, "--seed", 7, "--threads", 1)
    check_same_tensors(os.path.join(RUN_PY, "model.safetensors"), os.path.join(RUN_C, "model.safetensors"),
                       "Python vs CLI training")
    check(r.epochs == 2 and r.stop == "max_iter reached", "epochs %s stop %s" % (r.epochs, r.stop))
    check(np.isfinite(r.score) and r.score == r.best, "score %r best %r" % (r.score, r.best))
    x = npred.Dataset(DATA[0]).images[:3]
    x = (x - x.mean()) / x.std()
    key = list(r.model.sessions)[0]
    check_equal(r.model.predict(x, session=key), npred.Model.open(RUN_C).predict(x, session=key),
                "returned model vs the CLI's run")
    # progress: an initial evaluation (epoch 0), then per epoch every batch and the epoch
    ep = [e for e in events if e["event"] == "epoch"]
    bt = [e for e in events if e["event"] == "batch"]
    check([e["epoch"] for e in ep] == [0, 1, 2], "epoch events %s" % [e["epoch"] for e in ep])
    n_batches = bt[0]["n_batches"] if bt else 0
    check(len(bt) == 2 * n_batches and n_batches > 0, "%d batch events, %d per epoch" % (len(bt), n_batches))
    check(all(np.isfinite(e["loss"]) and e["data_key"] in r.model.sessions for e in bt), "batch events")
    check([e["batch"] for e in bt[:n_batches]] == list(range(1, n_batches + 1)), "batch numbering")
    cfg = json.load(open(os.path.join(RUN_PY, "config.json")))
    check(cfg["seed"] == 7 and cfg["data"] == DATA and cfg["model"] == r.model.config, "run config.json")


def test_interrupt_and_resume():
    """Ctrl-C (SIGINT) during training stops after the current batch with
    KeyboardInterrupt; resume=True then ends with the uninterrupted run's model."""
    out = os.path.join(TMP, "run_int")
    sent = []

    def progress(e):
        if e["event"] == "batch" and e["epoch"] == 2 and e["batch"] == 2 and not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    try:
        npred.train(data=DATA, model=MODEL, trainer=TRAINER, dataset=DATASET, out=out, seed=7, threads=1,
                    progress=progress)
        check(False, "no KeyboardInterrupt")
    except KeyboardInterrupt as e:
        check("resume" in str(e), "message %r" % str(e))
    check(sent == [1], "SIGINT sent")
    check(os.path.exists(os.path.join(out, "state.safetensors")), "state.safetensors kept")
    r = npred.train(out=out, resume=True, threads=1)
    check(r.epochs == 2, "resumed run ended after %s epochs" % r.epochs)
    check_same_tensors(os.path.join(out, "model.safetensors"), os.path.join(RUN_PY, "model.safetensors"),
                       "interrupted + resumed vs uninterrupted")


def test_progress_exception_stops_training():
    class Stop(Exception):
        pass

    def progress(e):
        if e["event"] == "batch":
            raise Stop("from the callback")

    check_raises(Stop, lambda: npred.train(data=DATA, model=MODEL, trainer=TRAINER, dataset=DATASET, seed=1,
                                           threads=1, progress=progress), "from the callback")


def test_evaluate_equals_c():
    """npred.evaluate's per-neuron values == npred_evaluate's (tests/pyref.c) bit for bit."""
    out = os.path.join(TMP, "eval_c")
    os.makedirs(out)
    sh(PYREF_BIN, "eval", out, RUN_PY, "test", json.dumps(DATASET), *DATA)
    ev = npred.evaluate(RUN_PY, DATA, "test", dataset=DATASET)
    check(list(ev.sessions) == ["90000-1-1", "90000-1-2"], "sessions %s" % list(ev.sessions))
    for key, s in ev.sessions.items():
        for k in ("corr", "corr_avg", "fev", "feve", "oracle"):
            check_equal(s[k], np.load(os.path.join(out, "%s_%s.npy" % (key, k))), "%s %s" % (key, k))
        check(s["n_neurons"] == 20 and s["n_images"] == 4 and s["n_trials"] == 12, "%s counts" % key)
    o = ev.overall
    check_equal(np.array([o["single_trial_corr"], o["corr_to_average"], o["feve"], o["oracle"],
                          o["fraction_oracle"]]), np.load(os.path.join(out, "overall.npy")), "overall")
    pn = ev.per_neuron
    check(len(pn["corr"]) == 40 and list(pn["session"][:1]) == ["90000-1-1"], "per_neuron columns")
    check_equal(pn["corr"][20:], ev.sessions["90000-1-2"]["corr"], "per_neuron = sessions concatenated")
    check_equal(pn["unit_id"][:20], npred.Loaders(DATA, **DATASET).session(0)["unit_ids"], "unit ids")
    check(abs(np.nanmean(pn["corr"]) - o["single_trial_corr"]) < 1e-12, "overall = mean over neurons")
    try:
        import pandas  # noqa: F401
        df = ev.to_dataframe()
        check(len(df) == 40 and "corr" in df.columns, "DataFrame")
    except ImportError:
        check_raises(ImportError, ev.to_dataframe)
    # a Model object gives the same
    ev2 = npred.evaluate(npred.Model.open(RUN_PY), DATA, "test", dataset=DATASET)
    check_equal(ev2.per_neuron["corr"], pn["corr"], "Model object vs path")


def parse_csv(text, column):
    """trial_indices and the (trials, neurons) values of a submission / ground-truth text,
    read here independently of the library (the kit's columns; lists as "[a, b, ...]")."""
    lines = text.splitlines()
    head = lines[0].split(",")
    check(head == ["trial_indices", "image_ids", column, "neuron_ids"], "header %r" % lines[0])
    trials, values, ids = [], [], None
    for line in lines[1:]:
        a, rest = line.split(",", 1)
        b, rest = rest.split(",", 1)
        vals, nid = rest.split("]", 1)
        trials.append(int(a))
        values.append([float(v) for v in vals.strip('"[').split(",")])
        row_ids = [int(v) for v in nid.strip(',"[] ').split(",")]
        check(ids is None or ids == row_ids, "neuron_ids differ between rows")
        ids = row_ids
    return np.array(trials), np.array(values), ids


def test_submission_and_score():
    """npred.submission / ground_truth write the bytes of `npred predict --submission /
    --ground-truth`; npred.score equals `npred score --json` and a numpy recomputation."""
    out = os.path.join(TMP, "sub")
    os.makedirs(out)
    ds = write_json(os.path.join(out, "dataset.json"), DATASET)
    sub = npred.submission(RUN_PY, DATA[:1], "test", dataset=DATASET, path=os.path.join(out, "py_sub.csv"))
    gt = npred.ground_truth(DATA[:1], "test", dataset=DATASET, path=os.path.join(out, "py_gt.csv"))
    sh(NPRED_BIN, "predict", "--model", RUN_PY, "--data", DATA[0], "--tier", "test", "--dataset", ds,
       "--submission", os.path.join(out, "c_sub.csv"), "--ground-truth", os.path.join(out, "c_gt.csv"))
    for a, b, text in (("py_sub.csv", "c_sub.csv", sub), ("py_gt.csv", "c_gt.csv", gt)):
        with open(os.path.join(out, a), "rb") as f:
            pa = f.read()
        with open(os.path.join(out, b), "rb") as f:
            pb = f.read()
        check(pa == pb and len(pa) > 200, "%s differs from the CLI's %s" % (a, b))
        check(text.encode() == pa, "%s: the returned text is the file" % a)
    trials, pred, ids = parse_csv(sub, "prediction")
    trials2, resp, ids2 = parse_csv(gt, "responses")
    check(len(trials) == 12 and pred.shape == (12, 20) and ids == ids2, "12 trials x 20 neurons")
    check(sorted(trials) == sorted(trials2), "same trials")
    # the model's own eval predictions, row by row
    m = npred.Model.open(RUN_PY)
    ev = npred.evaluate(m, DATA[:1], "test", dataset=DATASET)
    check(ids == list(ev.sessions["90000-1-1"]["unit_ids"]), "neuron_ids are the unit ids")
    sc = npred.score(os.path.join(out, "py_sub.csv"), os.path.join(out, "py_gt.csv"))
    j = json.loads(sh(NPRED_BIN, "score", "--submission", os.path.join(out, "c_sub.csv"), "--truth",
                      os.path.join(out, "c_gt.csv"), "--json")[1])
    for k, jk in (("single_trial_corr", "single_trial_correlation"), ("corr_to_average", "correlation_to_average"),
                  ("feve", "feve"), ("n_fev_kept", "feve_neurons"), ("n_trials", "n_trials"),
                  ("n_neurons", "n_neurons"), ("n_images", "n_images")):
        # (cJSON prints 15 significant digits where they read back within its tolerance)
        check(abs(sc[k] - j[jk]) <= 1e-14 * abs(j[jk]), "%s: %r, npred score %r" % (k, sc[k], j[jk]))
    check(sc.n_trials == 12 and sc.n_neurons == 20 and sc.n_images == 4, "counts %r" % sc)
    # single-trial correlation recomputed in float64 from the two texts
    order = np.argsort(trials)
    p, r = pred[order], resp[np.argsort(trials2)]
    pc, rc = p - p.mean(0), r - r.mean(0)
    corr = (pc * rc).sum(0) / np.sqrt((pc * pc).sum(0) * (rc * rc).sum(0))
    check(abs(np.nanmean(corr) - sc.single_trial_corr) < 1e-6,
          "numpy %.9f vs %.9f" % (np.nanmean(corr), sc.single_trial_corr))
    check(abs(sc.single_trial_corr - ev.sessions["90000-1-1"]["single_trial_corr"]) < 1e-5, "= npred.evaluate")
    # texts (str from npred.submission, bytes) and paths mixed give the same score
    for a, b in ((sub, gt), (sub.encode(), os.path.join(out, "py_gt.csv")), (os.path.join(out, "py_sub.csv"), gt)):
        check(npred.score(a, b) == sc, "score of texts / paths")
    # errors
    check_raises(npred.ArgumentError, lambda: npred.submission(m, DATA[:1], "train", dataset=DATASET), "train")
    check_raises(npred.ArgumentError, lambda: npred.submission(m, DATA, "test", dataset=DATASET), "one scan")
    check_raises(npred.ArgumentError, lambda: npred.ground_truth(DATA[:1], "validation", dataset=DATASET),
                 "validation")
    bad = gt.splitlines()
    bad[3] = bad[3][:len(bad[3]) // 2]
    check_raises(npred.FormatError, lambda: npred.score(sub, "\n".join(bad) + "\n"), "line 4")
    check_raises(npred.FileError, lambda: npred.score(os.path.join(out, "none.csv"), gt), "none.csv")
    check_raises(npred.FileError, lambda: npred.score(os.path.join(out, "none.csv"), os.path.join(out, "c_gt.csv")),
                 "none.csv")
    check_raises(npred.ArgumentError, lambda: npred.score(3, gt), "submission=")
    m.close()


def test_errors_are_exceptions():
    check_raises(npred.ConfigError, lambda: npred.train(data=DATA, model=MODEL, trainer={"max_iterations": 3},
                                                        dataset=DATASET), "max_iterations")
    check_raises(npred.ConfigError, lambda: npred.train(data=DATA, model=dict(MODEL, hiden_channels=3),
                                                        trainer=TRAINER, dataset=DATASET), "hiden_channels")
    check_raises(npred.FileError, lambda: npred.train(data=["tests/fixtures/no-scan"], model=MODEL,
                                                      trainer=TRAINER, dataset=DATASET), "no-scan")
    check_raises(npred.ArgumentError, lambda: npred.train(data=DATA, trainer=TRAINER), "model")
    check_raises(npred.FileError, lambda: npred.train(data=DATA, model="tests/fixtures/no-model.json",
                                                      trainer=TRAINER), "no-model.json")
    check_raises(npred.ArgumentError, lambda: npred.evaluate(RUN_PY, DATA, "nope", dataset=DATASET), "nope")
    check_raises(npred.ArgumentError, lambda: npred.train(data=DATA, model=MODEL, trainer=TRAINER, threads=0),
                 "threads")


def main():
    global TMP, DATA, RUN_PY, RUN_C
    TMP = tmpdir()
    try:
        DATA = npred.simulate(os.path.join(TMP, "sim"), **SIM)
        RUN_PY, RUN_C = os.path.join(TMP, "run_py"), os.path.join(TMP, "run_c")
        for t in (test_simulate_equals_cli, test_train_equals_cli, test_interrupt_and_resume,
                  test_progress_exception_stops_training, test_evaluate_equals_c, test_submission_and_score,
                  test_errors_are_exceptions):
            run(t)
    finally:
        shutil.rmtree(TMP)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
