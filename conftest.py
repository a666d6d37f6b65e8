"""Test-suite settings shared by the unit tests and the nbval notebook runs.

Notebook kernels inherit this process's environment, so setting it here makes every
notebook run at its smoke size, headless, and write into a temporary data/figures
folder rather than the reader's. The temporary folder is removed when the test process
exits (the notebook kernels, subprocesses of it, have finished by then).
"""
import atexit
import os
import shutil
import tempfile

_tmp = tempfile.mkdtemp(prefix="symlib-test-")
atexit.register(shutil.rmtree, _tmp, ignore_errors=True)
os.environ["SYMLIB_SMOKE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
os.environ.setdefault("SYMLIB_DATA", os.path.join(_tmp, "data"))
os.environ.setdefault("SYMLIB_FIGURES", os.path.join(_tmp, "figures"))
os.environ.setdefault("OMP_NUM_THREADS", "2")
