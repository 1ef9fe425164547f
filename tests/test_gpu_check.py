"""The one GPU check (perf/gpu_check.py) is run in sessions with a few minutes of device time
and no way to fix it there: its dry run, the same code with tiny models on the CPU, must finish
every section and report figures that agree with themselves, in an environment that holds only
what the device's GPU image has plus what tools/gpu-wheels.sh brings (tools/gpu_image.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "perf" / "gpu_check.py"


def stock_image_python(folder: Path) -> tuple[str, dict]:
    """An interpreter and environment that see the GPU image's packages, the wheel list's and
    sourcetrace's wheel, and nothing else (a bare virtual environment, no site-packages of ours)."""
    def tool(*args):
        subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_image.py"), *args], check=True, capture_output=True)

    tool("wheel", str(folder / "wheels"))
    tool("image", str(folder / "image"), "--with-wheel-list")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                    str(folder / "site"), *map(str, (folder / "wheels").glob("*.whl"))], check=True, capture_output=True)
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(folder / "venv")], check=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{folder / 'site'}{os.pathsep}{folder / 'image'}"}
    return str(folder / "venv" / "bin" / "python"), env


@pytest.mark.slow
@pytest.mark.tts
def test_the_gpu_checks_dry_run_completes_every_section_consistently_on_a_stock_image(tmp_path):
    pytest.importorskip("grad_tts", reason="the Grad-TTS stack is installed by tools/setup.sh")
    python, env = stock_image_python(tmp_path / "stock")
    probe = subprocess.run([python, "-c", "import sourcetrace, numba; print(sourcetrace.__file__)\nimport nemo"],
                           capture_output=True, text=True, env=env)
    assert str(tmp_path) in probe.stdout and "No module named 'nemo'" in probe.stderr  # ours only, isolated
    out = tmp_path / "check.json"
    proc = subprocess.run([python, str(SCRIPT), "--small", "--device", "cpu", "--threads", "1",
                           "--workdir", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    result = json.loads(out.read_text())
    assert proc.returncode == 0 and result["errors"] == {}, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["dry_run"] and result["complete"] and set(result["sections"]) == {"ssl", "features", "generators",
                                                                                      "knn"}

    for model in result["sections"]["ssl"]["models"].values():
        for path, row in model["paths"].items():
            if path != "naive":  # every fast path against the study's one-clip-at-a-time code
                assert row["max_relative_error_vs_naive"] < (1e-5 if path.startswith("float32") else 0.05), path
    assert "float32-gemm-frontend" in result["sections"]["ssl"]["models"]["tiny-wav2vec2@2"]["paths"]

    assert result["sections"]["features"]["clips"] == 40
    assert result["sections"]["features"]["store_ceiling"]["threads"]["1"]["clips_per_s"] > 0
    gradtts = result["sections"]["generators"]["gradtts"]
    assert gradtts["available"] and gradtts["deterministic"]["seconds_per_step"] > 0
    assert gradtts["resume"]["fresh_equals_first"] and gradtts["resume"]["resumed_equals_first"]
    assert result["sections"]["knn"]["cpu_selection"] == "compiled"  # numba is on the image
    for row in result["sections"]["knn"]["extractors"].values():
        assert row["predictions"] > 0 and row["predictions_differing"] == 0


def test_a_spent_budget_skips_the_remaining_sections_and_says_so(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small", "--device", "cpu", "--budget-s", "0",
                           "--sections", "knn,ssl", "--out", str(out)], capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert proc.returncode == 1 and result["skipped"] == ["knn", "ssl"] and result["sections"] == {}
