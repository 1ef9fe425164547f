import io
import tarfile

import pytest
import torch

from sourcetrace.checkpoints.official import inspect_file
from sourcetrace.checkpoints.registry import RegistryError, load_registry, load_schedule, verify_folder
from sourcetrace.cli import main


def test_registry_covers_every_architecture_and_vocoder_family():
    entries = load_registry()
    assert {e.architecture for e in entries if e.kind != "vocoder"} == {
        "fastpitch", "vits", "gradtts", "matcha", "vits-espnet", "xtts"}
    assert sorted((e.architecture, e.model) for e in entries if e.kind == "vocoder") == [
        ("", "bigvgan"), ("", "vocos"),                                       # owned by no architecture
        ("fastpitch", "dle-hifigan"), ("fastpitch", "nemo-hifigan"),          # the paper's, and NeMo's own
        ("gradtts", "hifigan"), ("matcha", "hifigan")]
    assert next(e for e in entries if e.id == "matcha/pretrained").trust == "full-unpickling"


def test_schedules():
    study = load_schedule("study")
    assert study.steps == (50000, 75000, 100000, 250000, 275000, 300000, 450000, 475000, 500000)
    assert study.zero_init_seeds == (1, 2, 3) and study.finetune_steps == 10000 and study.finetune_clips == 500
    mini = load_schedule("mini")
    assert [s * 2500 for s in mini.steps] == list(study.steps)
    with pytest.raises(RegistryError, match="no schedule 'huge'"):
        load_schedule("huge")


def test_architecture_names_come_from_the_plugin_registry_alone(tmp_path, monkeypatch):
    """sourcetrace.core.plugins is the one list of names: a registry entry of a plug-in architecture
    needs no second list."""
    from test_plugins import fake_distribution

    fake_distribution(tmp_path, "toyplug", "[sourcetrace.generators]\ntoyarch = toyplug.model:ToyGenerator\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "registry.toml").write_text('[[checkpoint]]\nid = "toyarch/pretrained"\narchitecture = "toyarch"\n'
                                            'kind = "acoustic"\nfile = "toy.pt"\nformat = "torch"\nsource = "s"\n'
                                            'url = ""\nsha256 = ""\ntrust = "unknown"\n')
    [entry] = load_registry(tmp_path / "registry.toml")
    assert entry.model == "toyarch"


def test_each_model_declares_its_official_formats(tmp_path):
    """Every built-in class declares its official formats (checkpoints/official.py holds no table of
    models); a name nothing registers is named by itself; a file that two formats match is the one
    that outranks the other's (BigVGAN's keys are a HiFi-GAN's and more)."""
    from sourcetrace.checkpoints.formats import OfficialFormat
    from sourcetrace.checkpoints.official import model_name
    from sourcetrace.core.errors import SourcetraceError
    from sourcetrace.core.plugins import GENERATORS, VOCODERS

    declared = {name for registry in (GENERATORS, VOCODERS) for name, cls in registry.items() if cls.official_formats}
    assert declared == set(GENERATORS.builtins) | set(VOCODERS.builtins)
    assert model_name("vits") == "a Coqui VITS model" and model_name("espnet-tacotron2") == "a espnet-tacotron2 model"
    with pytest.raises(SourcetraceError, match="a torch format must say how a file of it is recognised"):
        OfficialFormat("torch", "a model of no keys")
    t = torch.zeros(1)
    hifigan = {"conv_pre.weight": t, "ups.0.weight": t}
    estimator = {"decoder.estimator.down_blocks.0.weight": t, "encoder.proj_w.weight": t}
    for content, holds in (({"generator": hifigan}, "hifigan"),
                           ({"generator": {**hifigan, "activation_post.alpha": t}}, "bigvgan"),
                           ({"generator": hifigan, "config": {}}, "dle-hifigan"),
                           ({"generator": {**hifigan, "activation_post.alpha": t}, "config": {}}, "bigvgan"),
                           ({"generator": {"module.conv_pre.weight": t}}, None),
                           (estimator, "gradtts"),
                           ({"state_dict": estimator, "hyper_parameters": {}}, "matcha")):
        torch.save(content, tmp_path / "file.pt")
        assert inspect_file(tmp_path / "file.pt").holds == holds, content


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
    """Files of the right container but not the official content are never `ok` (the official
    files themselves, written by the official packages: tests/test_official_checkpoints.py)."""
    (tmp_path / "nvidia").mkdir()
    _nemo(tmp_path / "nvidia" / "tts_en_fastpitch_align.nemo")  # a .nemo whose config names no model
    (tmp_path / "nvidia" / "tts_hifigan.nemo").write_bytes(_torch_bytes())  # wrong format
    (tmp_path / "model_file.pth").write_bytes(_torch_bytes())  # config.json missing beside it
    (tmp_path / "grad-tts.pt").write_bytes(_torch_bytes(legacy=True))
    (tmp_path / "generator_v1").write_bytes(b"<html>Not Found</html>")  # a failed download
    rows = {r.entry.id: r for r in verify_folder(tmp_path)}
    assert rows["fastpitch/pretrained"].status == "bad" and len(rows["fastpitch/pretrained"].sha256) == 64
    assert "not those of the official file" in rows["fastpitch/pretrained"].problems[0]
    assert "expected nemo format, found torch zip" in rows["vocoder/hifigan-nemo"].problems[0]
    assert "missing companion config.json beside it" in rows["vits/pretrained"].problems
    assert rows["gradtts/pretrained"].status == "bad"  # a complete legacy torch file, but not Grad-TTS's keys
    assert "not a checkpoint: an HTML page" in rows["vocoder/hifigan-matcha"].problems[0]
    assert rows["matcha/pretrained"].status == "missing"
    legacy = inspect_file(tmp_path / "grad-tts.pt", deep=True)
    assert (legacy.format, legacy.container, legacy.problem) == ("torch", "legacy torch pickle", None)


def test_verify_checks_published_hashes_and_cli_exit_codes(tmp_path, capsys):
    registry = tmp_path / "registry.toml"
    registry.write_text('[[checkpoint]]\nid = "x/pretrained"\narchitecture = "gradtts"\nkind = "acoustic"\n'
                        'file = "x.pt"\nformat = "torch"\nsource = "s"\nurl = ""\n'
                        f'sha256 = "{"0" * 64}"\ntrust = "unknown"\n')
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "x.pt").write_bytes(_torch_bytes())
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(registry.read_text().replace('"gradtts"', '"tacotron"'))
    with pytest.raises(RegistryError, match="x/pretrained: architecture must be one of"):
        load_registry(unknown)
    assert main(["checkpoints", "verify", str(tmp_path / "ckpts"), "--registry", str(registry)]) == 1
    assert "differs from the published" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["checkpoints", "verify", str(tmp_path / "empty")]) == 0  # nothing bad, only missing
    out = capsys.readouterr().out
    assert "0 ok, 0 bad, 12 missing" in out and "get it from: Matcha-TTS checkpoints release" in out
    assert main(["checkpoints", "verify", str(tmp_path / "empty"), "--require-all"]) == 1


@pytest.mark.parametrize("legacy", [False, True])
def test_every_cut_of_a_torch_file_is_found(tmp_path, legacy):
    """Wherever a download stops, the file is reported incomplete (never a crash, never complete)."""
    whole = tmp_path / "whole.pt"
    torch.save({"generator": {"conv_pre.weight": torch.randn(64, 8), "ups.0.weight": torch.randn(300)}}, whole,
               _use_new_zipfile_serialization=not legacy)
    assert inspect_file(whole, deep=True).problem is None and inspect_file(whole).holds == "hifigan"
    data = whole.read_bytes()
    cut = tmp_path / "cut.pt"
    for keep in sorted({1, 2, 50, len(data) // 3, len(data) // 2, len(data) - 600, len(data) - 9, len(data) - 1}):
        cut.write_bytes(data[:keep])
        assert inspect_file(cut, deep=True).problem, keep
    if legacy:  # the legacy format has no directory: bytes past its last storage are not torch.save's
        cut.write_bytes(data + b"\0" * 8)
        assert "unexpected bytes" in inspect_file(cut, deep=True).problem


def test_inspecting_a_pickle_never_runs_it(tmp_path):
    import pickle

    class RunsCode:
        def __reduce__(self):
            return exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').close()",)

    (tmp_path / "a.ckpt").write_bytes(pickle.dumps({"state_dict": RunsCode()}, protocol=4))
    torch.save({"state_dict": RunsCode()}, tmp_path / "b.ckpt")
    for name in ("a.ckpt", "b.ckpt"):
        report = inspect_file(tmp_path / name, deep=True)
        assert "builtins.exec" in report.globals
        assert "builtins.exec" in report.refusal("matcha") and report.trust_note("matcha") is None
    assert not (tmp_path / "pwned").exists()


def test_damaged_files_are_reported_never_raised(tmp_path):
    """Random byte changes and cuts in both torch formats: inspect_file and verify always answer
    with a report (a damaged length field must not allocate gigabytes either)."""
    import random

    rng = random.Random(0)
    sources = []
    for legacy in (False, True):
        buf = io.BytesIO()
        torch.save({"generator": {"conv_pre.weight": torch.randn(16, 4), "ups.0.weight": torch.randn(40)}}, buf,
                   _use_new_zipfile_serialization=not legacy)
        sources.append(buf.getvalue())
    (tmp_path / "v").mkdir()
    damaged = tmp_path / "v" / "generator_v1"
    for _ in range(150):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(1, len(data))]
        damaged.write_bytes(bytes(data))
        inspect_file(damaged, deep=True)  # raises nothing
    row = next(r for r in verify_folder(tmp_path / "v") if r.entry.id == "vocoder/hifigan-matcha")
    assert row.path == damaged
