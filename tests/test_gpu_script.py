"""benchmarks/gpu.sh works: its dry run (the GPU tests, which skip without CUDA, and every benchmark
part at toy sizes on the CPU) finishes and writes its figures as JSON with the device named."""
import json
import os
import subprocess
import sys

import symlib

SCRIPT = symlib.REPO_ROOT / "benchmarks" / "gpu.sh"


def test_gpu_script_dry_run(tmp_path):
    out = tmp_path / "bench_gpu_tiny.json"
    env = {**os.environ, "PYTHON": sys.executable, "SYMLIB_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], cwd=symlib.REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    meta, rows = report["meta"], report["rows"]
    assert meta["tiny"] is True and meta["device_name"].startswith("cpu") and meta["errors"] == {}
    assert meta["gpu_tests"].startswith("exit 0")  # collected, and skipped without CUDA
    assert {r["part"] for r in rows} == {"das", "mas", "seeds", "dynamics"}
    assert [r["what"] for r in rows if r["part"] == "mas"][-1] == "MAS: 5 networks"
    das = next(r for r in rows if r["part"] == "das")
    assert das["ms_per_step_mean"] > 0
    assert not (symlib.REPO_ROOT / "data" / "runs" / "tiny-gru-dynamics").exists()  # toy runs stay out of data/


def test_gpu_script_refuses_without_cuda_or_bad_options(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    bad = subprocess.run(["bash", str(SCRIPT), "--frobnicate"], cwd=symlib.REPO_ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option" in bad.stderr
    import torch
    if not torch.cuda.is_available():
        proc = subprocess.run(["bash", str(SCRIPT)], cwd=symlib.REPO_ROOT, env={**env, "PYTHON": ""}, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2 and "no CUDA device" in proc.stderr
