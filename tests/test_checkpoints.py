import io
import tarfile

import pytest
import torch

from sourcetrace.checkpoints.registry import (
    RegistryError, load_registry, load_schedule, sniff_format, verify_folder)
from sourcetrace.cli import main


def test_registry_covers_the_four_architectures_and_three_vocoders():
    entries = load_registry()
    assert {e.architecture for e in entries} == {"fastpitch", "vits", "gradtts", "matcha"}
    assert sum(e.kind == "vocoder" for e in entries) == 3
    assert next(e for e in entries if e.id == "matcha/pretrained").trust == "full-unpickling"


def test_schedules():
    study = load_schedule("study")
    assert study.steps == (50000, 75000, 100000, 250000, 275000, 300000, 450000, 475000, 500000)
    assert study.zero_init_seeds == (1, 2, 3) and study.finetune_steps == 10000 and study.finetune_clips == 500
    mini = load_schedule("mini")
    assert [s * 2500 for s in mini.steps] == list(study.steps)
    with pytest.raises(RegistryError, match="no schedule 'huge'"):
        load_schedule("huge")


def _nemo(path):
    with tarfile.open(path, "w") as tar:
        for name, data in (("model_config.yaml", b"sample_rate: 22050\n"), ("model_weights.ckpt", _torch_bytes())):
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _torch_bytes(legacy=False):
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def test_verify_recognises_formats_without_unpickling(tmp_path):
    (tmp_path / "nvidia").mkdir()
    _nemo(tmp_path / "nvidia" / "tts_en_fastpitch_align.nemo")
    (tmp_path / "nvidia" / "tts_hifigan.nemo").write_bytes(_torch_bytes())  # wrong format
    (tmp_path / "model_file.pth").write_bytes(_torch_bytes())  # config.json missing beside it
    (tmp_path / "grad-tts.pt").write_bytes(_torch_bytes(legacy=True))
    (tmp_path / "generator_v1").write_bytes(b"<html>Not Found</html>")  # a failed download
    rows = {r.entry.id: r for r in verify_folder(tmp_path)}
    assert rows["fastpitch/pretrained"].status == "ok" and len(rows["fastpitch/pretrained"].sha256) == 64
    assert "expected nemo format" in rows["vocoder/hifigan-nemo"].problems[0]
    assert rows["vits/pretrained"].problems == ["missing companion config.json beside it"]
    assert rows["gradtts/pretrained"].status == "ok"
    assert "not a checkpoint" in rows["vocoder/hifigan-matcha"].problems[0]
    assert rows["matcha/pretrained"].status == "missing"
    assert sniff_format(tmp_path / "grad-tts.pt") == "torch"


def test_verify_checks_published_hashes_and_cli_exit_codes(tmp_path, capsys):
    registry = tmp_path / "registry.toml"
    registry.write_text('[[checkpoint]]\nid = "x/pretrained"\narchitecture = "x"\nkind = "acoustic"\n'
                        'file = "x.pt"\nformat = "torch"\nsource = "s"\nurl = ""\n'
                        f'sha256 = "{"0" * 64}"\ntrust = "unknown"\n')
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "x.pt").write_bytes(_torch_bytes())
    assert main(["checkpoints", "verify", str(tmp_path / "ckpts"), "--registry", str(registry)]) == 1
    assert "differs from the published" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["checkpoints", "verify", str(tmp_path / "empty")]) == 0  # nothing bad, only missing
    out = capsys.readouterr().out
    assert "0 ok, 0 bad, 7 missing" in out and "get it from: Matcha-TTS checkpoints release" in out
    assert main(["checkpoints", "verify", str(tmp_path / "empty"), "--require-all"]) == 1
