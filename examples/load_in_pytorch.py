"""Load an npred model (RUN/model.safetensors) into neuralpredictors 0.3.0 / PyTorch.

usage: python3 load_in_pytorch.py RUN IMAGES.npy DATA_KEY OUT.npy

Builds the FiringRateEncoder(Stacked2dCore, FullGaussian2d multi-readout) of the run's
resolved configuration, loads every tensor with load_state_dict(strict=True), and writes
the eval-mode predictions for IMAGES (B, C, H, W) to OUT. Compare with
`npred predict --model RUN --images IMAGES.npy --session DATA_KEY --out pred.npy`.
Needs torch, numpy and neuralpredictors 0.3.0 (not needed by npred itself).
"""
import sys, json, collections, collections.abc
collections.Iterable = collections.abc.Iterable  # neuralpredictors 0.3.0 on Python >= 3.10
# neuralpredictors 0.3.0 must be importable (pip install neuralpredictors==0.3.0)
import numpy as np, torch
from neuralpredictors.layers.cores import Stacked2dCore
from neuralpredictors.layers.readouts import MultiReadoutSharedParametersBase, FullGaussian2d
from neuralpredictors.layers.encoders import FiringRateEncoder

def load_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    dtypes = {"F32": np.float32, "I64": np.int64, "F64": np.float64}
    tensors = {k: torch.from_numpy(np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]],
                                                 dtype=dtypes[v["dtype"]]).reshape(v["shape"]).copy())
               for k, v in header.items()}
    return tensors, meta

run = sys.argv[1]
state, meta = load_safetensors(run + "/model.safetensors")
cfg = json.loads(meta["npred_config"]); sessions = json.loads(meta["npred_sessions"])
c = cfg["core"]
core = Stacked2dCore(input_channels=c["input_channels"], hidden_channels=c["hidden_channels"], input_kern=c["input_kern"],
    hidden_kern=c["hidden_kern"], layers=c["layers"], gamma_input=c["gamma_input"], skip=c["skip"],
    final_nonlinearity=c["final_nonlinearity"], bias=c["bias"], momentum=c["momentum"], pad_input=c["pad_input"],
    batch_norm=c["batch_norm"], hidden_dilation=c["hidden_dilation"], laplace_padding=c["laplace_padding"],
    input_regularizer=c["input_regularizer"], stack=c["stack"], depth_separable=c["depth_separable"], linear=c["linear"],
    use_avg_reg=c["use_avg_reg"])
class Multi(MultiReadoutSharedParametersBase):
    _base_readout = FullGaussian2d
shape = json.loads(meta["npred_input_shape"])
with torch.no_grad():
    out_shape = core(torch.zeros(1, *shape)).shape[1:]
r = cfg["readout"]; g = dict(r["grid_mean_predictor"]); g.pop("type"); g.pop("input_dimensions")
keys = [s["key"] for s in sessions]
readout = Multi(in_shape_dict={k: out_shape for k in keys}, n_neurons_dict={s["key"]: s["n_neurons"] for s in sessions},
    init_mu_range=r["init_mu_range"], bias=r["bias"], init_sigma=r["init_sigma"], gamma_readout=r["feature_reg_weight"],
    gauss_type=r["gauss_type"], grid_mean_predictor=g, grid_mean_predictor_type="cortex",
    source_grids={s["key"]: np.random.randn(s["n_neurons"], 2) for s in sessions})
model = FiringRateEncoder(core=core, readout=readout, elu_offset=cfg["encoder"]["elu_offset"])
missing = model.load_state_dict(state, strict=True)
model.eval()
imgs = np.load(sys.argv[2]).astype(np.float32)
with torch.no_grad():
    y = model(torch.from_numpy(imgs), data_key=sys.argv[3]).numpy()
np.save(sys.argv[4], y)
print("torch output", y.shape, "load_state_dict strict OK:", missing)
