#!/usr/bin/python3
"""Write the fuzzers' seed corpora: python3 fuzz/make_seeds.py OUTDIR

One folder per target (OUTDIR/<target>/), from tests/fixtures/, configs/, the
real checkpoints' pickles (../shared/checkpoints, when present, unless
--repo-only is given) and small files made here in every variant the parsers
accept (npy versions and dtypes, pickled state_dicts, .pth archives,
safetensors with metadata). Needs only numpy. Run from the repository root.
The same tree gives the same bytes on every run and machine (the zip members
carry a fixed date), so a fuzz run with a fixed seed repeats exactly."""
import collections
import glob
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile
import zlib

import numpy as np

OUT = sys.argv[1]
REPO_ONLY = "--repo-only" in sys.argv[2:]
N = collections.Counter()


def put(target, data, name=None):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    N[target] += 1
    with open(os.path.join(d, name or "seed%03d" % N[target]), "wb") as f:
        f.write(data)


def npy_bytes(a, version=None):
    b = io.BytesIO()
    np.lib.format.write_array(b, a, version=version, allow_pickle=False)
    return b.getvalue()


# ---- npy: fixtures (small ones) and every version / dtype / order
for p in sorted(glob.glob("tests/fixtures/*/*.npy") + glob.glob("tests/fixtures/*/*/*.npy"))[:400]:
    if os.path.getsize(p) <= 4096:
        put("npy", open(p, "rb").read())
rng = np.random.default_rng(0)
base = rng.standard_normal((2, 3))
for dt in ["<f4", ">f4", "<f8", ">f8", "<f2", "<i8", ">i4", "<i2", "|i1", "|u1", "<u2", "<u4", "<u8", "|b1"]:
    put("npy", npy_bytes(base.astype(dt)))
put("npy", npy_bytes(np.array(["ab", "cde"], dtype="<U3")))
put("npy", npy_bytes(np.array([b"ab", b"c"], dtype="|S2")))
put("npy", npy_bytes(np.asfortranarray(base.astype("<f4"))))
put("npy", npy_bytes(np.float32(1.5).reshape(())))
put("npy", npy_bytes(np.zeros((0, 4), "<f4")))
for v in [(1, 0), (2, 0), (3, 0)]:
    put("npy", npy_bytes(base.astype("<f4"), version=v))

# ---- pickle and .pth: a torch.save-style state_dict made without torch
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
torch._utils = utils


def _storage_type(name):
    t = type(name, (), {})
    t.__module__ = "torch"
    setattr(torch, name, t)
    return t


def _rebuild_tensor_v2(*a):
    return a


def _rebuild_parameter(*a):
    return a


for f in (_rebuild_tensor_v2, _rebuild_parameter):
    f.__module__ = "torch._utils"
    setattr(utils, f.__name__, f)


class Storage:
    def __init__(self, stype, key, numel, data):
        self.stype, self.key, self.numel, self.data = stype, key, numel, data


class Tensor:
    def __init__(self, st, off, shape, stride, param=False):
        self.st, self.off, self.shape, self.stride, self.param = st, off, shape, stride, param

    def __reduce__(self):
        t = (_rebuild_tensor_v2, (self.st, self.off, self.shape, self.stride, False, collections.OrderedDict()))
        if self.param:
            return (_rebuild_parameter, (t_obj(t), True, collections.OrderedDict()))
        return t


class t_obj:
    def __init__(self, r):
        self.r = r

    def __reduce__(self):
        return self.r


class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.stype, obj.key, "cpu", obj.numel)
        return None


def state_dict_pickle(obj, protocol=2):
    b = io.BytesIO()
    P(b, protocol=protocol).dump(obj)
    return b.getvalue()


F = _storage_type("FloatStorage")
D = _storage_type("DoubleStorage")
L = _storage_type("LongStorage")
H = _storage_type("HalfStorage")
_storage_type("BFloat16Storage")
B = _storage_type("BoolStorage")
s0 = Storage(F, "0", 6, np.arange(6, dtype="<f4").tobytes())
s1 = Storage(L, "1", 1, np.array([5], "<i8").tobytes())
s2 = Storage(D, "2", 4, np.arange(4, dtype="<f8").tobytes())
s3 = Storage(H, "3", 2, np.array([1, 2], "<f2").tobytes())
s4 = Storage(B, "4", 3, np.array([1, 0, 1], "|b1").tobytes())
sd = collections.OrderedDict()
sd["core.features.layer0.conv.weight"] = Tensor(s0, 0, (2, 3), (3, 1))
sd["core.features.layer0.norm.num_batches_tracked"] = Tensor(s1, 0, (), ())
sd["readout.mu"] = Tensor(s2, 1, (3,), (1,), param=True)
sd["transposed"] = Tensor(s0, 0, (3, 2), (1, 3))
sd["half"] = Tensor(s3, 0, (2,), (1,))
sd["mask"] = Tensor(s4, 0, (3,), (1,))
storages = [s0, s1, s2, s3, s4]


def zip_put(z, name, data, method):
    """a member dated 1980-01-01 (writestr with a name would stamp the current time)"""
    z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=method)


def pth_bytes(obj, byteorder="little", protocol=2):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        zip_put(z, "archive/data.pkl", state_dict_pickle(obj, protocol), zipfile.ZIP_STORED)
        zip_put(z, "archive/byteorder", byteorder, zipfile.ZIP_STORED)
        zip_put(z, "archive/version", "3\n", zipfile.ZIP_STORED)
        for s in storages:
            zip_put(z, "archive/data/" + s.key, s.data, zipfile.ZIP_STORED)
    return b.getvalue()


for proto in (2, 4):
    put("pickle", state_dict_pickle(sd, proto))
    put("pickle", state_dict_pickle({"model": sd, "epoch": 3, "lr": 0.5, "name": "x", "flag": None}, proto))
put("pth", pth_bytes(sd))
put("pth", pth_bytes({"state_dict": sd, "epoch": 7}))
put("pth", pth_bytes(sd, protocol=4))
for p in [] if REPO_ONLY else sorted(glob.glob("../shared/checkpoints/*.pth")):
    with zipfile.ZipFile(p) as z:
        for n in z.namelist():
            if n.endswith("data.pkl"):
                put("pickle", z.read(n))

# ---- safetensors


def safetensors_bytes(tensors, meta=None):
    header, blob = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, (dt, a) in tensors.items():
        raw = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


t = {
    "core.features.layer0.conv.weight": ("F32", base.astype("<f4")),
    "readout.bias": ("F64", np.arange(3, dtype="<f8")),
    "n": ("I64", np.array(4, "<i8")),
    "h": ("F16", np.ones(2, "<f2")),
    "b": ("BOOL", np.array([1, 0], "|b1")),
    "u": ("U8", np.arange(3, dtype="|u1")),
    "e": ("F32", np.zeros((0, 2), "<f4")),
}
put("safetensors", safetensors_bytes(t))
put("safetensors", safetensors_bytes(t, {"npred_config": open("configs/sensorium_sota.json").read()}))
put("safetensors", safetensors_bytes({}, {}))

# ---- dataset zip: the mini SENSORIUM tree, and the same with its members deflated
for p in sorted(glob.glob("tests/fixtures/mini_tree/*.zip")):
    raw = open(p, "rb").read()
    put("dataset_zip", raw)
    src = zipfile.ZipFile(io.BytesIO(raw))
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for i in src.infolist():
            zip_put(z, i.filename, src.read(i.filename), zipfile.ZIP_DEFLATED)
    put("dataset_zip", b.getvalue())

# ---- JSON configs
for p in sorted(glob.glob("configs/*.json")):
    name = os.path.basename(p)
    target = ("dataset_config" if name.startswith("dataset") else "trainer_config" if name.startswith("trainer")
              else "model_config")
    put(target, open(p, "rb").read())
put("dataset_config", json.dumps({"paths": ["a.zip", "b"], "batch_size": 8, "seed": None, "neuron_ids": [[1, 2], None],
                                  "image_condition": ["imagenet"], "scale": 0.5, "normalize": True}).encode())
put("trainer_config", json.dumps({"max_iter": 2, "lr_init": 0.005, "loss_function": "PoissonLoss",
                                  "stop_function": "get_correlations", "device": "cpu", "patience": 1}).encode())
# the kit's video standard_trainer arguments (the target reads the text as both trainers)
put("trainer_config", json.dumps({"max_iter": 3, "lr_init": 0.005, "print_step": 10, "save_checkpoints": True,
                                  "checkpoint_save_path": "ckpt/", "chpt_save_step": 2, "use_wandb": False,
                                  "wandb_project": "p", "deeplake_ds": False, "seed": 7}).encode())
put("model_config", json.dumps({"core": {"type": "Stacked2dCore", "hidden_channels": 4, "layers": 2, "stack": [0, 1]},
                                "readout": {"type": "FullGaussian2d", "gauss_type": "full"},
                                "shifter": {"type": "MLPShifter"}, "modulator": None}).encode())

# ---- MEI configs: every component and kwarg the parser knows
mei = {"device": "cpu", "seed": 3, "initial": {"path": "mei.initial.RandomNormal"},
       "optimizer": {"path": "torch.optim.Adam", "kwargs": {"lr": 0.05, "betas": [0.8, 0.99], "eps": 1e-8}},
       "precondition": {"path": "mei.legacy.ops.GaussianBlur",
                        "kwargs": {"sigma": [1.5, 0.6], "decay_factor": -0.001, "truncate": 3, "pad_mode": "replicate"}},
       "transform": {"path": "mei.legacy.ops.Jitter", "kwargs": {"max_jitter": [2, 3]}},
       "postprocessing": [{"path": "mei.legacy.ops.ChangeNorm", "kwargs": {"norm": 12}},
                          {"path": "mei.legacy.ops.ClipRange", "kwargs": {"x_min": -1.5, "x_max": 2}}],
       "stopper": {"path": "npred.stoppers.Plateau", "kwargs": {"patience": 20, "min_delta": 0.001, "max_iterations": 400}},
       "objectives": [{"path": "mei.objectives.EvaluationObjective", "kwargs": {"interval": 1}},
                      {"path": "mei.objectives.PostProcessedInputObjective"}]}
put("mei_config", json.dumps(mei).encode())
put("mei_config", json.dumps({"optimizer": {"path": "torch.optim.SGD", "kwargs": {"lr": 1, "momentum": 0.5}},
                              "precondition": {"path": "mei.legacy.ops.GaussianBlur", "kwargs": {"sigma": 1}},
                              "postprocessing": {"path": "mei.legacy.ops.ChangeNorm", "kwargs": {"norm": 10}},
                              "stopper": {"path": "mei.stoppers.NumIterations", "kwargs": {"num_iterations": 5}}}).encode())
put("mei_config", b"{}")
for p in sorted(glob.glob("configs/*mei*.json")):
    put("mei_config", open(p, "rb").read())

# ---- video configs: the kit's make_video_model arguments of the three encoder
# fixtures (and small variants) and the mouse_video_loader arguments of mini_movie_tree
for case in ("video_gru_encoder", "video_gru_encoder_stacked2d", "video_factorized3d_encoder"):
    mv = json.load(open("tests/fixtures/%s/case.json" % case))["args"]["make_video_model"]
    put("video_config", json.dumps(mv).encode())
    if mv["core_type"] == "3D_factorised":
        small = json.loads(json.dumps(mv))
        small["core_dict"]["hidden_channels"] = [4] * small["core_dict"].get("layers", 3)
        put("video_config", json.dumps(small).encode())
        small["core_type"] = "3D"
        put("video_config", json.dumps(small).encode())
variants = json.load(open("tests/fixtures/mini_movie_tree/case.json"))["variants"]
for name in sorted(variants):
    kw = dict(variants[name]["mouse_video_loader_kwargs"])
    kw["paths"] = ["scan/"]
    put("video_config", json.dumps(kw).encode())
put("video_config", b'{"batch_size": 1}')

# ---- video .pth imports: the make_video_model arguments, a NUL byte, then the torch.save
# file of the same encoder fixture (tests/fixtures/video_pth/, written with PyTorch)
for case in ("video_gru_encoder", "video_gru_encoder_stacked2d", "video_factorized3d_encoder"):
    mv = json.load(open("tests/fixtures/%s/case.json" % case))["args"]["make_video_model"]
    with open("tests/fixtures/video_pth/%s.pth" % case, "rb") as f:
        put("video_pth", json.dumps(mv).encode() + b"\0" + f.read())

# ---- submission CSVs: the submission, a NUL byte, then the ground truth (as the target splits them)


def csv_rows(col, rows, quote=True):
    q = '"' if quote else ""
    out = "trial_indices,image_ids,%s,neuron_ids\n" % col
    for trial, image, vals, ids in rows:
        out += "%s,%d,%s[%s]%s,%s[%s]%s\n" % (trial, image, q, ", ".join(repr(float(v)) for v in vals), q,
                                             q, ", ".join(str(i) for i in ids), q)
    return out.encode()


ids = [4, 9, 12]
truth = [(7, 100, [1.0, 2.0, 0.5], ids), (3, 100, [2.0, 1.5, 0.25], ids), (5, 200, [0.5, 0.25, 1.0], ids),
         (9, 200, [1.0, 0.75, 2.0], ids)]
pred = [(t, i, [v * 0.9 + 0.1 for v in vals], n) for t, i, vals, n in truth]
put("submission_csv", csv_rows("prediction", pred) + b"\0" + csv_rows("responses", truth))
put("submission_csv", csv_rows("prediction", pred[::-1]) + b"\0" + csv_rows("responses", truth))
put("submission_csv", csv_rows("prediction", [(t, i, v[::-1], n[::-1]) for t, i, v, n in pred]) + b"\0" +
    csv_rows("responses", truth))
put("submission_csv", csv_rows("prediction", [("a%d" % t, i, v, n) for t, i, v, n in pred]).replace(b"\n", b"\r\n") +
    b"\0" + csv_rows("responses", [("a%d" % t, i, v, n) for t, i, v, n in truth]))
one = [(t, i, v[:1], n[:1]) for t, i, v, n in truth]
put("submission_csv", csv_rows("prediction", one, quote=False) + b"\0" + csv_rows("responses", one, quote=False))

# ---- PNG: 8-bit gray, gray + alpha, RGB, RGBA, palette, 16-bit (rejected), written here with zlib


def png_bytes(w, h, color_type, depth, rows, plte=None, trns=None):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\0" + r for r in rows)  # filter type 0 on every row
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    if plte:
        out += chunk(b"PLTE", plte)
    if trns:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


W_, H_ = 5, 3
put("png", png_bytes(W_, H_, 0, 8, [bytes((x * 40 + y) % 256 for x in range(W_)) for y in range(H_)]))
put("png", png_bytes(W_, H_, 4, 8, [bytes(v for x in range(W_) for v in (x * 50, 255 - x)) for y in range(H_)]))
put("png", png_bytes(W_, H_, 2, 8, [bytes(v for x in range(W_) for v in (x * 50, y * 80, 7)) for y in range(H_)]))
put("png", png_bytes(W_, H_, 6, 8, [bytes(v for x in range(W_) for v in (x, y, 9, 128)) for y in range(H_)]))
put("png", png_bytes(W_, H_, 3, 8, [bytes((x + y) % 3 for x in range(W_)) for y in range(H_)],
                     plte=bytes([0, 0, 0, 255, 0, 0, 0, 255, 0]), trns=bytes([255, 128])))
put("png", png_bytes(4, 2, 0, 1, [bytes([0b10100000]), bytes([0b01010000])]))
put("png", png_bytes(2, 2, 0, 16, [b"\x01\x00\xff\xff", b"\x00\x10\x80\x00"]))

for k in sorted(N):
    print("%s: %d seeds" % (k, N[k]))
