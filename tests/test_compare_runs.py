"""tools/compare_runs.py, the before/after proof of a refactor: it passes two runs that differ only in
when they ran, and names a changed clip, result value or extra file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(root: Path, created: str, seconds: float) -> Path:
    (root / "corpus" / "audio" / "vits" / "step-000020").mkdir(parents=True)
    (root / "corpus" / "audio" / "vits" / "step-000020" / "LJ001-0001.wav").write_bytes(b"RIFF clip")
    (root / "corpus" / "manifest.csv").write_text("clip_id,path\nc,audio/vits/step-000020/LJ001-0001.wav\n")
    (root / "results").mkdir()
    (root / "results" / "table1.json").write_text(json.dumps({"levels": {"checkpoint": {"mean": 0.5}},
                                                             "provenance": {"created": created}}))
    (root / "stages").mkdir()
    (root / "stages" / "train.json").write_text(json.dumps({"identity": "abc", "seconds": seconds}))
    (root / "runs" / "vits" / "tensorboard").mkdir(parents=True)
    (root / "runs" / "vits" / "tensorboard" / f"events.out.tfevents.{int(seconds)}").write_bytes(b"event")
    return root


def _compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "compare_runs.py"), str(a), str(b)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def runs(tmp_path):
    return _run(tmp_path / "before", "2026-01-01T00:00:00", 12.5), _run(tmp_path / "after", "2026-01-02T00:00:00", 9.0)


def test_two_runs_that_differ_only_in_time_are_identical(runs):
    done = _compare(*runs)
    assert done.returncode == 0, done.stdout
    assert "identical" in done.stdout and "clips: 1" in done.stdout


@pytest.mark.parametrize("change, expected", [
    (lambda r: (r / "corpus/audio/vits/step-000020/LJ001-0001.wav").write_bytes(b"RIFF other"),
     "differs: corpus/audio/vits/step-000020/LJ001-0001.wav"),
    (lambda r: (r / "results/table1.json").write_text(json.dumps({"levels": {"checkpoint": {"mean": 0.6}},
                                                                  "provenance": {"created": "x"}})),
     "differs: results/table1.json"),
    (lambda r: (r / "stages/train.json").write_text(json.dumps({"identity": "abd", "seconds": 1})),
     "differs: stages/train.json"),
    (lambda r: shutil.copy(r / "results/table1.json", r / "results/extra.json"), "only in"),
])
def test_a_changed_output_is_named(runs, change, expected):
    change(runs[1])
    done = _compare(*runs)
    assert done.returncode == 1 and expected in done.stdout, done.stdout
