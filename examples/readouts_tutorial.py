"""The neuralpredictors readouts tutorial, with npred from Python.

A Stacked2dCore (1 input channel, 64 hidden channels, input_kern 9, hidden_kern 7,
4 depth-separable layers, stack -1, gamma_input 6.3831; the tutorial's model
config) on 144 x 256 images, then a multi-session readout over its (64, 144, 256)
output for two sessions, 21067-10-18 (8372 neurons) and 22846-10-16 (7344):
first FullFactorized2d (a full spatial mask per neuron), then FullGaussian2d (one
learned position per neuron). For each it prints the architecture as the
tutorial does (reprs such as `FullFactorized2d (64 x 144 x 256 -> 8372) with
bias, normalized`, parameter counts per readout and per neuron) and predicts a
batch of random images for the first session.

usage: PYTHONPATH=python python3 examples/readouts_tutorial.py [--size H W] [--batch B]

The two-session models are described with Model.plan (their structure, no
parameter memory): the factorized one holds 580M parameters, which is the
tutorial's point. The forward pass of the factorized readout allocates the first
session's model only (309M parameters: about 2.5 GB with its gradient buffer);
`--size 36 64` runs the same architecture on SENSORIUM-size images in a few
hundred MB."""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import npred  # noqa: E402

SESSIONS = {"21067-10-18": 8372, "22846-10-16": 7344}

# the tutorial's core: Stacked2dCore(**model_config)
CORE = {"type": "Stacked2dCore", "input_channels": 1, "hidden_channels": 64, "input_kern": 9, "hidden_kern": 7,
        "layers": 4, "depth_separable": True, "stack": -1, "gamma_input": 6.3831}
READOUTS = {
    # MultiReadoutBase(in_shape_dict, n_neurons_dict, base_readout=FullFactorized2d, bias=True, normalize=True)
    "FullFactorized2d": {"type": "FullFactorized2d", "bias": True, "normalize": True},
    # MultiReadoutBase(..., base_readout=FullGaussian2d, bias=True)
    "FullGaussian2d": {"type": "FullGaussian2d", "bias": True},
}


def readout_lines(description):
    """The per-readout lines of Model.describe(): repr and parameter counts."""
    lines = description.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("readout "):
            out.append(line)
            if i + 1 < len(lines) and "parameters" in lines[i + 1]:
                out.append(lines[i + 1])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", nargs=2, type=int, default=[144, 256], metavar=("H", "W"),
                    help="image size [144 256, the tutorial's]")
    ap.add_argument("--batch", type=int, default=32, help="images to predict [32]")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args(argv)
    shape = (1, a.size[0], a.size[1])
    images = np.random.default_rng(a.seed).normal(size=(a.batch,) + shape).astype(np.float32)
    first = list(SESSIONS)[0]

    print("model_config (core):", json.dumps({k: v for k, v in CORE.items() if k != "type"}))
    for i, (name, readout) in enumerate(READOUTS.items()):
        config = {"core": CORE, "readout": readout}
        plan = npred.Model.plan(config, shape, SESSIONS)
        d = plan.describe()
        if i == 0:
            print(d[:d.index("\nreadout ")])  # the core's repr and its parameter count, once
        print("\n%s multi-readout:" % name)
        for line in readout_lines(d):
            print("  " + line)
        print("  " + d.strip().splitlines()[-1])  # total
        print("  readout_repr(%s): %s" % (first, plan.readout_repr(first)))
        plan.close()
        # the forward pass: the factorized readout for the first session only (memory)
        sessions = {first: SESSIONS[first]} if name == "FullFactorized2d" else SESSIONS
        m = npred.Model.create(config, shape, sessions, max_batch=min(a.batch, 8), seed=a.seed)
        rates = m.predict(images, session=first)
        print("  forward (eval) of %d images, session %s: output %s, finite: %s"
              % (a.batch, first, rates.shape, bool(np.isfinite(rates).all())))
        if name == "FullGaussian2d":
            pos = m.positions(first)
            print("  readout positions of %s: %s in [%.2f, %.2f]" % (first, pos.shape, pos.min(), pos.max()))
        m.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
