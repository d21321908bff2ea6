"""Load an npred model (RUN/model.safetensors) into PyTorch.

usage: python3 load_in_pytorch.py RUN IMAGES.npy DATA_KEY OUT.npy [--pupil-center P.npy] [--behavior B.npy]
       python3 load_in_pytorch.py --selftest          (needs the npred package: PYTHONPATH=python)

Builds a PyTorch FiringRateEncoder with the module tree and state_dict names of
neuralpredictors 0.3.0 from the run's resolved configuration (safetensors metadata
npred_config), loads every tensor with load_state_dict(strict=True), and writes the
eval-mode firing rates for IMAGES (B, C, H, W) to OUT. Compare with
`npred predict --model RUN --images IMAGES.npy --session DATA_KEY --out pred.npy`.

neuralpredictors itself is not needed (it is not installable everywhere): the
modules below are written for PyTorch alone and compute what the 0.3.0 classes
compute in eval mode, under the same parameter names, so their state_dict can be
loaded into the real classes too. Covered: the Stacked2dCore; every readout npred
saves (FullGaussian2d with its own, shared or cortex-predicted grid and own or
shared features, Gaussian2d, FullFactorized2d, PointPooled2d, AttentionReadout with
any number of attention layers); the MLP and StaticAffine2d shifters; the MLP
modulator. --selftest builds one npred model of each kind, saves it, loads it here
and compares the predictions with npred's (docs/python.md has the figures).
Needs torch and numpy."""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DTYPES = {"F32": np.float32, "I64": np.int64, "F64": np.float64}


def load_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {k: torch.from_numpy(np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]],
                                                 dtype=DTYPES[v["dtype"]]).reshape(v["shape"]).copy())
               for k, v in header.items()}
    return tensors, meta


# ------------------------------------------------------------------ core
class AdaptiveELU(nn.Module):
    """ELU(x - xshift) + yshift."""

    def __init__(self, xshift, yshift):
        super().__init__()
        self.xshift, self.yshift = xshift, yshift

    def forward(self, x):
        return F.elu(x - self.xshift) + self.yshift


class DepthSeparableConv2d(nn.Sequential):
    def __init__(self, cin, cout, k, padding, dilation, bias):
        super().__init__()
        self.add_module("in_depth_conv", nn.Conv2d(cin, cout, 1, bias=bias))
        self.add_module("spatial_conv", nn.Conv2d(cout, cout, k, padding=padding, dilation=dilation, groups=cout,
                                                  bias=bias))
        self.add_module("out_depth_conv", nn.Conv2d(cout, cout, 1, bias=bias))


class Laplace(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("filter", torch.zeros(1, 1, 3, 3))


class InputRegularizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.laplace = Laplace()


class Stacked2dCore(nn.Module):
    """neuralpredictors 0.3.0 Stacked2dCore (eval mode), from npred's resolved core config."""

    def __init__(self, c, state):
        super().__init__()
        if c.get("neuralpredictors", "0.3.0") != "0.3.0":
            raise SystemExit("load_in_pytorch: the core has neuralpredictors %r's structure; only 0.3.0's is "
                             "built here" % c["neuralpredictors"])
        if c.get("stride", 1) != 1 or not c.get("batch_norm_scale", True) or not c.get("independent_bn_bias", True):
            raise SystemExit("load_in_pytorch: stride, batch_norm_scale=false or independent_bn_bias=false "
                             "cores are not handled here")
        L, hc = c["layers"], c["hidden_channels"]
        hk = c["hidden_kern"] if isinstance(c["hidden_kern"], list) else [c["hidden_kern"]]
        hk = (hk * (L - 1))[:L - 1] if len(hk) < L - 1 else hk
        dil = c.get("hidden_dilation", 1)
        hpad = c.get("hidden_padding")
        if hpad is None:  # 0.3.0: computed once from the first hidden kernel
            hpad = ((hk[0] - 1) * dil + 1) // 2 if L > 1 else 0
        self.skip, self.layers = c.get("skip", 0), L
        stack = c.get("stack")
        self.stack = list(range(L)) if stack is None else (list(range(L))[stack:] if isinstance(stack, int) else stack)
        xs, ys = c.get("elu_shift", [0, 0])
        bn = c.get("batch_norm", True)
        self.features = nn.Sequential()
        for l in range(L):
            layer = nn.Sequential()
            if l == 0:
                cin = c["input_channels"]
                pad = c["input_kern"] // 2 if c.get("pad_input") else 0
                layer.add_module("conv", nn.Conv2d(cin, hc, c["input_kern"], padding=pad,
                                                   bias=c.get("bias", False) and not bn))
            else:
                cin = hc if not self.skip > 1 else min(self.skip, l) * hc
                if c.get("depth_separable"):
                    layer.add_module("ds_conv", DepthSeparableConv2d(cin, hc, hk[l - 1], hpad, dil,
                                                                     c.get("bias", False)))
                else:
                    layer.add_module("conv", nn.Conv2d(cin, hc, hk[l - 1], padding=hpad, dilation=dil,
                                                       bias=c.get("bias", False)))
            if bn:
                layer.add_module("norm", nn.BatchNorm2d(hc, momentum=c.get("momentum", 0.1)))
            if not c.get("linear") and (l < L - 1 or c.get("final_nonlinearity", True)):
                layer.add_module("nonlin", AdaptiveELU(xs, ys))
            self.features.add_module("layer%d" % l, layer)
        if any(k.startswith("core._input_weights_regularizer.") for k in state):
            self._input_weights_regularizer = InputRegularizer()

    def forward(self, x):
        ret = []
        for l, layer in enumerate(self.features):
            inp = x if l == 0 else (torch.cat(ret[-min(self.skip, l):], dim=1) if self.skip > 1 else ret[-1])
            ret.append(layer(inp))
        return torch.cat([ret[i] for i in self.stack], dim=1)


# ------------------------------------------------------------------ readouts
def mlp(dims, act, final_act=True):
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2 or final_act:
            layers.append(act())
    return nn.Sequential(*layers)


class FullGaussian2d(nn.Module):
    def __init__(self, r, c, n, prefix, state):
        super().__init__()
        self.align_corners = r.get("align_corners", True)
        has = lambda k: prefix + k in state  # noqa: E731
        self.predicted = has("source_grid")
        self.shared_grid = has("grid_sharing_index")
        self.shared_features = has("feature_sharing_index")
        if self.predicted:
            g = r["grid_mean_predictor"]
            dims = [g["input_dimensions"]] + [g["hidden_features"]] * g["hidden_layers"] + [2]
            self.mu_transform = mlp(dims, nn.ELU, final_act=False)
            if g.get("final_tanh"):
                self.mu_transform.add_module(str(len(self.mu_transform)), nn.Tanh())
            self.register_buffer("source_grid", torch.zeros(state[prefix + "source_grid"].shape))
        else:
            self._mu = nn.Parameter(torch.zeros(state[prefix + "_mu"].shape))
            if self.shared_grid:
                self.register_buffer("grid_sharing_index", torch.zeros(n, dtype=torch.long))
                if has("mu_transform.weight"):
                    self.mu_transform = nn.Linear(2, 2)
        self.sigma = nn.Parameter(torch.zeros(state[prefix + "sigma"].shape))
        self._features = nn.Parameter(torch.zeros(state[prefix + "_features"].shape))
        if self.shared_features:
            self.scales = nn.Parameter(torch.zeros(state[prefix + "scales"].shape))
            self.register_buffer("feature_sharing_index", torch.zeros(n, dtype=torch.long))
        self.bias = nn.Parameter(torch.zeros(n)) if has("bias") else None
        self.n = n

    def mu(self):
        if self.predicted:
            return self.mu_transform(self.source_grid).view(1, self.n, 1, 2)
        if self.shared_grid:
            if hasattr(self, "mu_transform"):
                return self.mu_transform(self._mu.view(-1, 2))[self.grid_sharing_index].view(1, self.n, 1, 2)
            return self._mu[:, self.grid_sharing_index]
        return self._mu

    def features(self):
        if self.shared_features:
            return self.scales * self._features[..., self.feature_sharing_index]
        return self._features

    def forward(self, x, shift=None):
        B, c = x.shape[:2]
        grid = self.mu().clamp(-1, 1).expand(B, self.n, 1, 2)
        if shift is not None:
            grid = grid + shift[:, None, None, :]
        y = F.grid_sample(x, grid, align_corners=self.align_corners).squeeze(-1)   # (B, c, n)
        y = (y * self.features().view(1, c, self.n)).sum(1)
        return y + self.bias if self.bias is not None else y


class Gaussian2d(nn.Module):
    def __init__(self, r, c, n, prefix, state):
        super().__init__()
        self.align_corners = r.get("align_corners", True)
        self.mu = nn.Parameter(torch.zeros(1, n, 1, 2))
        self.sigma = nn.Parameter(torch.zeros(1, n, 1, 2))
        self.features = nn.Parameter(torch.zeros(1, c, 1, n))
        self.bias = nn.Parameter(torch.zeros(n)) if prefix + "bias" in state else None
        self.n = n

    def forward(self, x, shift=None):
        B, c = x.shape[:2]
        grid = self.mu.clamp(-1, 1).expand(B, self.n, 1, 2)
        if shift is not None:
            grid = grid + shift[:, None, None, :]
        y = F.grid_sample(x, grid, align_corners=self.align_corners).squeeze(-1)
        y = (y * self.features.view(1, c, self.n)).sum(1)
        return y + self.bias if self.bias is not None else y


class FullFactorized2d(nn.Module):
    def __init__(self, r, c, n, prefix, state):
        super().__init__()
        self.normalize, self.constrain_pos = r.get("normalize", True), r.get("constrain_pos", False)
        self.spatial = nn.Parameter(torch.zeros(state[prefix + "spatial"].shape))
        self._features = nn.Parameter(torch.zeros(state[prefix + "_features"].shape))
        self.shared = prefix + "scales" in state
        if self.shared:
            # 0.3.0 keeps this index as a plain attribute (not in the state_dict): the position of
            # each neuron's multi_match_id among the sorted match ids of all sessions
            self.scales = nn.Parameter(torch.zeros(state[prefix + "scales"].shape))
            self.feature_sharing_index = r["_sharing_index"][prefix]
        self.bias = nn.Parameter(torch.zeros(n)) if prefix + "bias" in state else None

    def forward(self, x, shift=None):
        if shift is not None:
            raise ValueError("FullFactorized2d takes no shift")
        m = self.spatial
        if self.normalize:
            m = m / (m.pow(2).sum(dim=(1, 2), keepdim=True).sqrt() + 1e-6)
        f = self.scales * self._features[self.feature_sharing_index] if self.shared else self._features
        if self.constrain_pos:
            m, f = m.clamp(min=0), f.clamp(min=0)
        y = torch.einsum("bchw,ohw->bco", x, m)
        y = torch.einsum("bco,oc->bo", y, f)
        return y + self.bias if self.bias is not None else y


class PointPooled2d(nn.Module):
    def __init__(self, r, c, n, prefix, state):
        super().__init__()
        self.pool_steps, self.pool_kern = r.get("pool_steps", 1), r.get("pool_kern", 2)
        self.align_corners = r.get("align_corners", True)
        self.grid = nn.Parameter(torch.zeros(1, n, 1, 2))
        self.features = nn.Parameter(torch.zeros(1, c * (self.pool_steps + 1), 1, n))
        self.bias = nn.Parameter(torch.zeros(n)) if prefix + "bias" in state else None
        self.n = n

    def forward(self, x, shift=None):
        B = x.shape[0]
        grid = self.grid.clamp(-1, 1).expand(B, self.n, 1, 2)
        if shift is not None:
            grid = grid + shift[:, None, None, :]
        pools = [F.grid_sample(x, grid, align_corners=self.align_corners)]
        for _ in range(self.pool_steps):
            x = F.avg_pool2d(x, self.pool_kern, stride=self.pool_kern)
            pools.append(F.grid_sample(x, grid, align_corners=self.align_corners))
        y = torch.cat(pools, dim=1).squeeze(-1)                    # (B, c*(P+1), n)
        y = (y * self.features.view(1, -1, self.n)).sum(1)
        return y + self.bias if self.bias is not None else y


class Pyramid(nn.Module):
    """The fixed-filter Laplacian pyramid of PointPyramid2d (its buffer `filter`)."""

    def __init__(self, k, scale_n, downsample):
        super().__init__()
        self.register_buffer("filter", torch.zeros(k, k))
        self.k, self.scale_n, self.downsample = k, scale_n, downsample

    def forward(self, img):
        c, k, p = img.shape[1], self.k, self.k // 2
        f = self.filter.expand(c, 1, k, k)
        levels = []
        for _ in range(self.scale_n):
            smooth = F.conv2d(img, f, padding=p, groups=c)
            if self.downsample:
                lo = smooth[:, :, ::2, ::2]
                op = tuple(img.shape[d] - ((lo.shape[d] - 1) * 2 - 2 * p + k) for d in (2, 3))
                lo2 = 4 * F.conv_transpose2d(lo, f, stride=2, padding=p, output_padding=op, groups=c)
            else:
                lo = lo2 = smooth
            levels.append(img - lo2)
            img = lo
        return levels + [img]


class PointPyramid2d(nn.Module):
    def __init__(self, r, c, n, prefix, state):
        super().__init__()
        S = r.get("scale_n", 4)
        self.positive, self.align_corners = r.get("positive", False), r.get("align_corners", True)
        self.gauss_pyramid = Pyramid(state[prefix + "gauss_pyramid.filter"].shape[0], S, r.get("downsample", True))
        self.grid = nn.Parameter(torch.zeros(1, n, 1, 2))
        self.features = nn.Parameter(torch.zeros(1, c * (S + 1), 1, n))
        self.bias = nn.Parameter(torch.zeros(n)) if prefix + "bias" in state else None
        self.n = n

    def forward(self, x, shift=None):
        B = x.shape[0]
        grid = self.grid.clamp(-1, 1).expand(B, self.n, 1, 2)
        if shift is not None:
            grid = grid + shift[:, None, None, :]
        y = torch.cat([F.grid_sample(lv, grid, align_corners=self.align_corners) for lv in self.gauss_pyramid(x)],
                      dim=1).squeeze(-1)
        f = self.features.clamp(min=0) if self.positive else self.features
        y = (y * f.view(1, -1, self.n)).sum(1)
        return y + self.bias if self.bias is not None else y


class AttentionReadout(nn.Module):
    def __init__(self, r, c, n, prefix, state):
        super().__init__()
        k, L = r.get("attention_kernel", 1), r.get("attention_layers", 1)
        pad = int(k > 1)
        self.attention = nn.Sequential()
        for l in range(L - 1):
            self.attention.add_module("conv%d" % l, nn.Conv2d(c, c, k, padding=pad))
            self.attention.add_module("norm%d" % l, nn.BatchNorm2d(c))
            self.attention.add_module("nonlin%d" % l, nn.ELU())
        self.attention.add_module("conv%d" % L, nn.Conv2d(c, n, k, padding=pad))
        self.features = nn.Parameter(torch.zeros(n, c))
        self.bias = nn.Parameter(torch.zeros(n)) if prefix + "bias" in state else None

    def forward(self, x, shift=None):
        if shift is not None:
            raise ValueError("AttentionReadout takes no shift")
        a = F.softmax(self.attention(x).flatten(2), dim=-1)          # (B, n, hw)
        t = torch.einsum("bnp,bcp->bnc", a, x.flatten(2))
        y = (t * self.features).sum(-1)
        return y + self.bias if self.bias is not None else y


READOUTS = {"FullGaussian2d": FullGaussian2d, "Gaussian2d": Gaussian2d, "FullFactorized2d": FullFactorized2d,
            "PointPooled2d": PointPooled2d, "PointPyramid2d": PointPyramid2d, "AttentionReadout": AttentionReadout}


# ------------------------------------------------------------------ shifter, modulator, encoder
class MLPShifter(nn.Module):
    def __init__(self, s):
        super().__init__()
        L = s["shift_layers"]
        dims = [s["input_channels"]] + [s["hidden_channels_shifter"]] * (L - 1) + [2]
        self.mlp = mlp(dims, nn.Tanh, final_act=True)

    def forward(self, pupil_center):
        return self.mlp(pupil_center)


class StaticAffine2d(nn.Linear):
    def __init__(self, s):
        super().__init__(s["input_channels"], 2, bias=s.get("bias", True))

    def forward(self, pupil_center):
        return torch.tanh(super().forward(pupil_center))


class MLPModulator(nn.Module):
    """gain = ELU(mlp(behavior)) + 1 multiplies the readout (ReLU after every Linear)."""

    def __init__(self, m, n):
        super().__init__()
        dims = [m["input_channels"]] + [m["hidden_channels"]] * (m["layers"] - 1) + [n]
        self.modulator_networks = nn.ModuleList([mlp(dims, nn.ReLU, final_act=True)])

    def forward(self, x, behavior):
        return x * (F.elu(self.modulator_networks[0](behavior)) + 1)


class FiringRateEncoder(nn.Module):
    def __init__(self, cfg, sessions, input_shape, state):
        super().__init__()
        if cfg["core"]["type"] != "Stacked2dCore":
            raise SystemExit("load_in_pytorch: only Stacked2dCore cores are handled here (this model has %s)"
                             % cfg["core"]["type"])
        self.core = Stacked2dCore(cfg["core"], state)
        with torch.no_grad():
            c = self.core.eval()(torch.zeros(1, *input_shape)).shape[1]
        r = dict(cfg["readout"])
        self.multi = r.get("multi", True)
        if any("match_ids" in s for s in sessions):
            ids = np.unique(np.concatenate([s["match_ids"] for s in sessions if "match_ids" in s]))
            r["_sharing_index"] = {("readout.%s." % s["key"] if self.multi else "readout."):
                                   torch.from_numpy(np.searchsorted(ids, s["match_ids"])) for s in sessions
                                   if "match_ids" in s}
        cls = READOUTS[r["type"]]
        if self.multi:
            self.readout = nn.ModuleDict({s["key"]: cls(r, c, s["n_neurons"], "readout.%s." % s["key"], state)
                                          for s in sessions})
        else:
            self.readout = cls(r, c, sessions[0]["n_neurons"], "readout.", state)
        sh = cfg.get("shifter")
        self.shifter = None
        if sh:
            make = MLPShifter if sh["type"] == "MLP" else StaticAffine2d
            self.shifter = nn.ModuleDict({s["key"]: make(sh) for s in sessions})
        mo = cfg.get("modulator")
        self.modulator = nn.ModuleDict({s["key"]: MLPModulator(mo, s["n_neurons"]) for s in sessions}) if mo else None
        self.offset = cfg["encoder"]["elu_offset"]

    def forward(self, x, data_key, pupil_center=None, behavior=None):
        x = self.core(x)
        shift = self.shifter[data_key](pupil_center) if self.shifter is not None else None
        x = (self.readout[data_key] if self.multi else self.readout)(x, shift=shift)
        if self.modulator is not None:
            x = self.modulator[data_key](x, behavior=behavior)
        return F.elu(x + self.offset) + 1


def load(run):
    path = run if run.endswith(".safetensors") else os.path.join(run, "model.safetensors")
    state, meta = load_safetensors(path)
    cfg = json.loads(meta["npred_config"])
    sessions = json.loads(meta["npred_sessions"])
    shape = json.loads(meta["npred_input_shape"])
    model = FiringRateEncoder(cfg, sessions, shape, state)
    model.load_state_dict(state, strict=True)
    return model.eval()


# ------------------------------------------------------------------ self test
def perturb_safetensors(path, rng):
    """Rewrite every float tensor of an npred model file with random values (in
    place, same layout), so that every parameter matters in the comparison;
    BatchNorm variances stay positive, and tensors stored twice (shared features or
    grid, one storage under two sessions' keys) stay identical."""
    done = {}
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    for k, v in header.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        a, b = v["data_offsets"]
        old = bytes(raw[base + a:base + b])
        if (k.rsplit(".", 1)[-1], old) not in done:
            x = np.frombuffer(old, np.float32).copy()
            x = x + 0.3 * rng.standard_normal(x.shape).astype(np.float32)
            if k.endswith("running_var"):
                x = np.abs(x) + 0.5
            done[(k.rsplit(".", 1)[-1], old)] = x.astype("<f4").tobytes()
        raw[base + a:base + b] = done[(k.rsplit(".", 1)[-1], old)]
    with open(path, "wb") as f:
        f.write(bytes(raw))


def selftest():
    """One npred model of every readout / shifter / modulator kind: npred's
    predictions vs this file's PyTorch modules."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import npred
    base = dict(layers=3, input_kern=5, hidden_kern=3, hidden_channels=8, gamma_input=1.0, gamma_readout=0.01)
    gauss = dict(base, init_mu_range=0.3, init_sigma=0.1)  # FullGaussian2d's own arguments
    cortex = {"type": "cortex", "input_dimensions": 2, "hidden_layers": 1, "hidden_features": 6, "final_tanh": True}
    kinds = {
        "FullGaussian2d": dict(gauss),
        "FullGaussian2d cortex grid + MLP shifter": dict(gauss, grid_mean_predictor=cortex, shifter=True),
        "FullGaussian2d shared features + grid": dict(gauss, share_features=True, share_grid=True),
        "FullGaussian2d isotropic, StaticAffine2d shifter": dict(gauss, gauss_type="isotropic", shifter=True,
                                                                 shifter_type="StaticAffine2d"),
        "FullGaussian2d + modulator": dict(gauss, modulator=True, input_channels_modulator=3),
        "Gaussian2d": dict(base, readout_type="Gaussian2d", init_mu_range=0.3),
        "FullFactorized2d": dict(base, readout_type="FullFactorized2d"),
        "FullFactorized2d unnormalized, constrain_pos": dict(base, readout_type="FullFactorized2d", normalize=False,
                                                            constrain_pos=True),
        "FullFactorized2d shared features": dict(base, readout_type="FullFactorized2d", share_features=True),
        "PointPooled2d + MLP shifter": dict(base, readout_type="PointPooled2d", shifter=True),
        "PointPyramid2d + MLP shifter": dict(base, readout_type="PointPyramid2d", shifter=True, scale_n=2),
        "PointPyramid2d gauss3x3, no downsample, positive": dict(base, readout_type="PointPyramid2d", scale_n=3,
                                                                pyramid_type="gauss3x3", downsample=False,
                                                                positive=True),
        "AttentionReadout": dict(base, readout_type="AttentionReadout"),
        "AttentionReadout, 2 layers, kernel 3": dict(base, readout_type="AttentionReadout", attention_layers=2,
                                                     attention_kernel=3),
        "depth-separable core, skip, stack": dict(gauss, depth_separable=True, skip=2, stack=-2, pad_input=True),
    }
    rng = np.random.default_rng(0)
    shape = (1, 18, 32)
    worst = 0.0
    print("%-50s %8s %12s %14s %12s" % ("model", "tensors", "max |diff|", "diff/(1+rate)", "rate spread"))
    for name, cfg in kinds.items():
        sess = []
        for i, n in enumerate((9, 6)):
            sess.append(dict(key="9-1-%d" % (i + 1), n_neurons=n, coords=rng.normal(size=(n, 3)),
                             mean_activity=rng.random(n), match_ids=np.arange(n) % 5))
        m = npred.Model.create(cfg, shape, sess, seed=3)
        d = tempfile.mkdtemp()
        m.save(d)
        perturb_safetensors(os.path.join(d, "model.safetensors"), rng)
        m = npred.Model.open(d)
        t = load(d)
        x = rng.normal(size=(4,) + shape).astype(np.float32)
        kw = {}
        if m.has_shifter:
            kw["pupil_center"] = rng.normal(size=(4, 2)).astype(np.float32)
        if m.behavior_channels:
            kw["behavior"] = rng.normal(size=(4, m.behavior_channels)).astype(np.float32)
        diff = rel = spread = 0.0
        for key in m.sessions:
            a = m.predict(x, session=key, **kw)
            with torch.no_grad():
                b = t(torch.from_numpy(x), data_key=key,
                      **{k: torch.from_numpy(v) for k, v in kw.items()}).numpy()
            diff = max(diff, float(np.max(np.abs(a - b))))
            rel = max(rel, float(np.max(np.abs(a - b) / (1 + np.abs(a)))))
            spread = max(spread, float(np.std(a, axis=0).mean()))
        worst = max(worst, rel)
        print("%-50s %8d %12.3g %14.3g %12.3g" % (name, len(t.state_dict()), diff, rel, spread))
    print("worst |npred - torch| / (1 + |npred|): %.3g (tolerance 1e-4)" % worst)
    return 0 if worst < 1e-4 else 1


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--selftest":
        return selftest()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("images")
    ap.add_argument("data_key")
    ap.add_argument("out")
    ap.add_argument("--pupil-center")
    ap.add_argument("--behavior")
    a = ap.parse_args()
    model = load(a.run)
    imgs = torch.from_numpy(np.load(a.images).astype(np.float32))
    kw = {}
    if a.pupil_center:
        kw["pupil_center"] = torch.from_numpy(np.load(a.pupil_center).astype(np.float32))
    if a.behavior:
        kw["behavior"] = torch.from_numpy(np.load(a.behavior).astype(np.float32))
    with torch.no_grad():
        y = model(imgs, data_key=a.data_key, **kw).numpy()
    np.save(a.out, y)
    print("torch output", y.shape, "(load_state_dict strict=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
