"""The Python examples run: examples/readouts_tutorial.py on SENSORIUM-size images
(the reprs and parameter counts checked against counts derived here from the layer
shapes), and examples/load_in_pytorch.py at least compiles (running it needs
PyTorch, which the test suite does not)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, run, summary


def test_readouts_tutorial():
    p = subprocess.run([sys.executable, "examples/readouts_tutorial.py", "--size", "36", "64", "--batch", "3"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.decode()
    if not check(p.returncode == 0, "exit %d: %s" % (p.returncode, out[-1500:])):
        return
    c, h, w = 64, 36, 64
    # core: 9x9 conv without bias, 3 depth-separable layers (1x1 with bias, 7x7 depthwise with bias,
    # 1x1 with bias), a BatchNorm weight + bias per layer
    core = c * 81 + 3 * ((c * c + c) * 2 + c * 49 + c) + 4 * 2 * c
    check("core: %d parameters (0.040M)" % core in out, "core count %d" % core)
    for key, n in (("21067-10-18", 8372), ("22846-10-16", 7344)):
        fz = h * w + c + 1          # spatial mask, features, bias
        check("readout %s: FullFactorized2d (64 x 36 x 64 -> %d) with bias, normalized" % (key, n) in out,
              "factorized repr of %s" % key)
        check("%d parameters (%.3fM), %d per neuron" % (fz * n, fz * n / 1e6, fz) in out, "factorized count %s" % key)
        fg = 2 + 4 + c + 1          # mu, full sigma (2x2), features, bias
        check("readout %s: full FullGaussian2d (64 x 36 x 64 -> %d) with bias" % (key, n) in out,
              "gaussian repr of %s" % key)
        check("%d parameters (%.3fM), %d per neuron" % (fg * n, fg * n / 1e6, fg) in out, "gaussian count %s" % key)
    check(out.count("output (3, 8372), finite: True") == 2, "two forward passes (3, 8372), finite")
    check("readout positions of 21067-10-18: (8372, 2)" in out, "positions")


def test_load_in_pytorch_compiles():
    with open("examples/load_in_pytorch.py") as f:
        compile(f.read(), "examples/load_in_pytorch.py", "exec")


if __name__ == "__main__":
    for t in (test_readouts_tutorial, test_load_in_pytorch_compiles):
        run(t)
    sys.exit(summary())
