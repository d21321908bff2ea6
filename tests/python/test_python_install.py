"""`make install DESTDIR=...` installs the Python package beside the library, and
the installed package finds the installed libnpred.so.0 by itself (no
NPRED_LIBRARY, no repository on the path) and works."""
import glob
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUILD, check, run, summary, tmpdir


def test_installed_package():
    stage = tmpdir()
    try:
        args = ["make", "--no-print-directory", "install", "PREFIX=/opt/npred", "DESTDIR=" + stage, "BUILD=" + BUILD]
        for var, env in (("OPT", "NPRED_OPT"), ("SAN", "NPRED_SAN"), ("MPI", "NPRED_MPI")):
            if os.environ.get(env) is not None:
                args.append("%s=%s" % (var, os.environ[env]))
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if not check(p.returncode == 0, "make install: %s" % p.stdout.decode()[-1500:]):
            return
        # <prefix>/lib/python3[.X]/dist-packages (the Makefile's PYTHONDIR)
        sites = glob.glob(os.path.join(stage, "opt", "npred", "lib", "python3*", "dist-packages"))
        if not check(len(sites) == 1 and os.path.exists(os.path.join(sites[0], "npred", "__init__.py")),
                     "package installed: %s" % sites):
            return
        site = sites[0]
        env = {k: v for k, v in os.environ.items() if k not in ("NPRED_LIBRARY", "PYTHONPATH")}
        env["PYTHONPATH"] = site
        code = ("import npred, os, numpy as np\n"
                "m = npred.Model.create({'layers': 2, 'input_kern': 3, 'hidden_kern': 3, 'hidden_channels': 2},"
                " (1, 8, 8), {'1-1-1': 3})\n"
                "print(os.path.realpath(npred.lib_path)); print(os.path.realpath(npred.__file__))\n"
                "print(m.predict(np.zeros((2, 1, 8, 8))).shape)\n")
        q = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                           cwd=stage)
        out = q.stdout.decode()
        lines = out.splitlines()
        if not check(q.returncode == 0 and len(lines) >= 3, "installed package failed: %s" % out[-1500:]):
            return
        libdir = os.path.realpath(os.path.join(stage, "opt", "npred", "lib"))
        check(lines[0].startswith(libdir + os.sep) and "libnpred.so" in lines[0], "library %s" % lines[0])
        check(lines[1].startswith(os.path.realpath(site)), "package %s" % lines[1])
        check(lines[2] == "(2, 3)", "prediction shape %s" % lines[2])
    finally:
        shutil.rmtree(stage)


if __name__ == "__main__":
    run(test_installed_package)
    sys.exit(summary())
