"""The one GPU check (benchmarks/gpu_check.py) is run in sessions with a few minutes of device time
and no way to fix it there: its dry run, the same code with tiny models on the CPU, must finish
every section and report figures that agree with themselves."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("grad_tts", reason="the Grad-TTS stack is installed by tools/setup.sh")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_the_gpu_checks_dry_run_completes_every_section_consistently(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small", "--device", "cpu", "--threads", "1",
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
    assert gradtts["resume"]["second_equals_first"] and gradtts["resume"]["resumed_equals_first"]
    for row in result["sections"]["knn"]["extractors"].values():
        assert row["predictions"] > 0 and row["predictions_differing"] == 0


def test_a_spent_budget_skips_the_remaining_sections_and_says_so(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small", "--device", "cpu", "--budget-s", "0",
                           "--sections", "knn,ssl", "--out", str(out)], capture_output=True, text=True, timeout=300)
    result = json.loads(out.read_text())
    assert proc.returncode == 1 and result["skipped"] == ["knn", "ssl"] and result["sections"] == {}
