#!/usr/bin/python3
"""Time one training step of the SENSORIUM 2023 GRU benchmark in PyTorch (for
docs/performance.md): the model the kit's benchmarks_training notebook builds
(make_video_model: RotationEquivariant2dCore per frame + ConvGRU + FullGaussian2d readout
with the cortex grid predictor + MLP shifter), its training loss (the kit's
full_objective: loss_scale * PoissonLoss(avg=False) on the last T' frames + core and
readout regularizers) and an AdamW step, on random data of the 2023 sizes.

Nothing of the kit is copied here: the kit (ecker-lab/sensorium_2023) and
neuralpredictors (43faede, the commit the kit pins) are imported from the paths given.
Optional packages the imported modules name but this model never uses (torchvision for
TransferLearningCore, nnfabrik for set_random_seed) are replaced by stand-ins when
missing.

    /usr/bin/python3 bench/torch_gru_step.py --kit KIT_DIR --neuralpredictors NP_DIR
"""
import argparse
import collections
import math
import os
import platform
import random
import statistics
import sys
import time
import types

import numpy as np


class StandIn(types.ModuleType):
    """A missing optional module: importable, every attribute a stand-in that fails if used."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{self.__name__}.{name} is not installed (stand-in)")

        return unavailable


def stand_ins(names):
    for name in names:
        try:
            __import__(name)
        except ImportError:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                sys.modules.setdefault(".".join(parts[:i]), StandIn(".".join(parts[:i])))
    special = sys.modules.get("scipy.special")
    if isinstance(special, StandIn):  # the Hermite basis needs gamma of integers only
        special.gamma = lambda x: np.vectorize(math.gamma, otypes=[np.float64])(x)
    helpers = sys.modules.get("nnfabrik.utility.nn_helpers")
    if isinstance(helpers, StandIn):
        import torch

        def set_random_seed(seed):
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)

        helpers.set_random_seed = set_random_seed


Batch = collections.namedtuple("Batch", ["videos", "responses", "behavior", "pupil_center"])


class Dataset:
    def __init__(self, n_trials, coords):
        self.n_trials = n_trials
        self.neurons = types.SimpleNamespace(cell_motor_coordinates=coords)

    def __len__(self):
        return self.n_trials


class Loader:
    """What make_video_model reads from a session's DataLoader: its batches,
    len(dataset) and dataset.neurons.cell_motor_coordinates."""

    def __init__(self, batch, n_trials, coords):
        self.batch = batch
        self.dataset = Dataset(n_trials, coords)

    def __iter__(self):
        yield self.batch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kit", required=True, help="a checkout of ecker-lab/sensorium_2023")
    ap.add_argument("--neuralpredictors", required=True, help="a checkout of sinzlab/neuralpredictors (43faede)")
    ap.add_argument("--neurons", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=80)
    ap.add_argument("--height", type=int, default=36)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--trials", type=int, default=600, help="trials of the session (the loss scale)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (0: the warm-up only)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    a = ap.parse_args()
    sys.path[:0] = [a.neuralpredictors, a.kit]
    stand_ins(["torchvision", "tqdm", "matplotlib.pyplot", "scipy", "scipy.signal", "scipy.special", "skimage",
               "skimage.transform", "h5py", "nnfabrik.utility.nn_helpers"])
    import torch
    from neuralpredictors.layers import hermite
    from neuralpredictors.measures import modules

    # 43faede's Hermite basis passes numpy floats to math.factorial, which Python >= 3.10
    # refuses; the same patch as the reference fixtures (int() of the argument)
    hermite.math = types.SimpleNamespace(**{k: getattr(math, k) for k in dir(math) if not k.startswith("_")})
    hermite.math.factorial = lambda k: math.factorial(int(k))
    from sensorium.models.make_model import make_video_model

    g = torch.Generator().manual_seed(a.seed)
    B, T, H, W, n = a.batch, a.frames, a.height, a.width, a.neurons
    batch = Batch(torch.rand(B, 3, T, H, W, generator=g), torch.poisson(torch.rand(B, n, T, generator=g)),
                  torch.rand(B, 2, T, generator=g), torch.randn(B, 2, T, generator=g))
    coords = np.random.default_rng(a.seed).uniform(-300, 300, size=(n, 3))
    loaders = {"train": {"scan": Loader(batch, a.trials, coords)}}

    # the benchmark notebook's configuration (benchmarks_training.ipynb, 49547d9)
    core = dict(input_channels=3, hidden_channels=8, input_kern=9, hidden_kern=7, layers=4, num_rotations=8,
                gamma_input=500, skip=0, pad_input=False, final_nonlinearity=False, bias=True, momentum=0.9,
                batch_norm=True, hidden_dilation=1, laplace_padding=None, input_regularizer="LaplaceL2norm",
                stack=-1, depth_separable=False, linear=False, attention_conv=False, hidden_padding=None,
                use_avg_reg=False, final_batchnorm_scale=True, gamma_hidden=500_000)
    gru = dict(input_channels=64, rec_channels=64, input_kern=9, rec_kern=9, gamma_rec=0)
    shifter = dict(gamma_shifter=0, shift_layers=3, input_channels_shifter=2, hidden_channels_shifter=5)
    readout = dict(bias=True, init_mu_range=0.2, init_sigma=1.0, gamma_readout=0.0, gauss_type="full",
                   grid_mean_predictor={"type": "cortex", "input_dimensions": 2, "hidden_layers": 1,
                                        "hidden_features": 30, "final_tanh": True},
                   share_features=False, share_grid=False, shared_match_ids=None, gamma_grid_dispersion=0.0)
    model = make_video_model(loaders, a.seed, core_dict=core, core_type="2D_equivariant", readout_dict=readout,
                             readout_type="gaussian", use_gru=True, gru_dict=gru, use_shifter=True,
                             shifter_dict=shifter, shifter_type="MLP")
    model.train()
    criterion = modules.PoissonLoss(avg=False)
    opt = torch.optim.AdamW(model.parameters(), lr=0.005)
    scale = np.sqrt(a.trials / B)

    def step():
        opt.zero_grad()
        out = model(batch.videos, data_key="scan", behavior=batch.behavior, pupil_center=batch.pupil_center)
        target = batch.responses.transpose(2, 1)[:, -out.shape[1]:, :]
        reg = model.core.regularizer() + model.readout.regularizer("scan")
        loss = scale * criterion(out, target) + reg
        loss.backward()
        opt.step()
        return out.shape

    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, python {platform.python_version()}, threads {torch.get_num_threads()}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')}, {os.cpu_count()} CPUs", flush=True)
    times, cpu = [], []
    for i in range(a.steps + 1):  # step 0 is the warm-up
        load0, t0, c0 = os.getloadavg(), time.perf_counter(), time.process_time()
        shape = step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        print(f"step {i}{' (warm-up)' if i == 0 else ''}: {times[-1]:.3f} s wall, {cpu[-1]:.3f} s CPU, "
              f"load average {load0[0]:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)
    times, cpu = times[1:], cpu[1:]
    n_par = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"GRU benchmark: videos ({B}, 3, {T}, {H}, {W}), {n} neurons, output {tuple(shape)}, "
          f"{n_par} trainable parameters")
    if times:
        print(f"forward + backward + AdamW step: median {statistics.median(times):.3f} s wall, "
              f"{statistics.median(cpu):.3f} s CPU over {len(times)} steps after the warm-up")


if __name__ == "__main__":
    main()
