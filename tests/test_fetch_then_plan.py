"""The full study's first two commands end to end, on tiny stand-ins served by a loopback server this
test starts (127.0.0.1 only): `run --plan` on an empty workdir names every missing input and the fetch
command; `fetch recipes/study.toml --mirror URL` (the SSL folders from the same server as a Hugging
Face endpoint) puts each in place; `--plan` then finds nothing missing and every unit pending; a second
fetch downloads nothing."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

from test_fetch import COMMIT, _tar, _zip, server  # noqa: F401  (server: the loopback fixture)

from sourcetrace.cli import main
from sourcetrace.pipeline.fetch import recipe_artefacts
from sourcetrace.pipeline.plan import EXIT_BLOCKED
from sourcetrace.pipeline.recipe import load_study_recipe

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "recipes" / "study.toml"


def _wav() -> bytes:
    """A 10 ms silent 22.05 kHz clip, LJSpeech's format."""
    out = io.BytesIO()
    with wave.open(out, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(22050)
        clip.writeframes(bytes(2 * 220))
    return out.getvalue()


def _lab_mirror(site) -> None:
    """Every file the study needs, at the relative paths of a lab mirror (pipeline/fetch.py: official/<file>
    for a checkpoint and its companion, downloads/<archive> for an archive), and the two SSL folders on the
    Hugging Face endpoint (any repository: the one commit's files)."""
    site.files["/downloads/LJSpeech-1.1.tar.bz2"] = _tar(
        {"LJSpeech-1.1/metadata.csv": b"LJ001-0001|Printing.|Printing.\n", "LJSpeech-1.1/wavs/LJ001-0001.wav": _wav(),
         "LJSpeech-1.1/README": b"stand-in"}, mode="w:bz2")
    site.files["/downloads/hi_fi_tts_v0.tar.gz"] = _tar(
        {"hi_fi_tts_v0/92_manifest_clean_train.json": b"{}\n", "hi_fi_tts_v0/audio/92_clean/1/a.flac": b"not kept",
         "hi_fi_tts_v0/9136_manifest_other_train.json": b'{"audio_filepath": "audio/9136_other/1/b.flac"}\n',
         "hi_fi_tts_v0/audio/9136_other/1/b.flac": b"fLaC stand-in"})
    site.files["/downloads/tts_models--en--ljspeech--vits.zip"] = _zip(
        {"tts_models--en--ljspeech--vits/model_file.pth": b"vits weights",
         "tts_models--en--ljspeech--vits/config.json": b"{}"})
    for name in ("tts_en_fastpitch_align.nemo", "hifigan_gen_checkpoint_10000_ft.pt", "grad-tts.pt", "hifigan.pt",
                 "matcha_ljspeech.ckpt", "generator_v1"):
        site.files[f"/official/{name}"] = f"stand-in for {name}".encode()
    site.files["/official/hifigan-config.json"] = b'{"resblock": "1"}'
    site.hub = {COMMIT: {"config.json": b'{"model_type": "wav2vec2"}', "preprocessor_config.json": b"{}",
                         "model.safetensors": b"tiny weights", "README.md": b"not taken"}}


def test_plan_fetch_plan_on_the_study_recipe_from_a_lab_mirror(server, tmp_path, monkeypatch, capsys):  # noqa: F811
    _lab_mirror(server)
    work = tmp_path / "work"
    monkeypatch.setenv("SOURCETRACE_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("HF_ENDPOINT", server.url)   # the lab's hub mirror: the SSL folders
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    needed = [a.name for a in recipe_artefacts(load_study_recipe(STUDY, base=work), work)]
    assert len(needed) == 12
    plan = ["run", str(STUDY), "--plan", "--workdir", str(work)]

    # 1. an empty workdir: every input missing, the fetch command that gets them, exit 3
    assert main(plan) == EXIT_BLOCKED
    out = capsys.readouterr().out
    assert f"[plan] {len(needed)} input(s) missing:" in out
    assert all(f"\n    {name}: " in out for name in needed), out
    # Grad-TTS's checkpoint has no file URL: by hand or from a lab mirror, so fetch gets "the catalogue's"
    assert f"[plan] get the catalogue's with: sourcetrace fetch {STUDY} --workdir {work}" in out
    assert "gradtts/pretrained" in out and "or fetch it from a lab mirror (--mirror)" in out

    # 2. fetch from the mirror: every artefact fetched (Grad-TTS's checkpoint, which has no public URL, too:
    # a mirror holds it at official/grad-tts.pt)
    fetch = ["fetch", str(STUDY), "--workdir", str(work), "--mirror", server.url, "--quiet", "--jobs", "2"]
    code = main(fetch)
    captured = capsys.readouterr()
    # the SSL folders come from the hub mirror HF_ENDPOINT names, the files from the URL mirror
    assert code == 0, captured.err
    assert [line.split(" -> ")[0] for line in captured.out.splitlines()[:-1]] == [
        f"[fetch] fetched: {name}" for name in needed]
    assert captured.out.splitlines()[-1] == f"[fetch] {len(needed)} of {len(needed)} artefacts in place"
    assert f"[fetch] fetched: xls-r-2b -> {tmp_path / 'models' / 'xls-r-2b'} (commit {COMMIT})\n" in captured.out
    assert (work / "data" / "LJSpeech-1.1" / "wavs" / "LJ001-0001.wav").read_bytes() == _wav()
    assert sorted(p.name for p in (work / "data" / "hi_fi_tts_v0").rglob("*") if p.is_file()) == [
        "9136_manifest_other_train.json", "b.flac"]  # only the recipe's fine-tune speaker
    assert sorted(p.name for p in (work / "official").iterdir()) == [
        "config.json", "generator_v1", "grad-tts.pt", "hifigan-config.json", "hifigan.pt",
        "hifigan_gen_checkpoint_10000_ft.pt", "matcha_ljspeech.ckpt", "model_file.pth", "tts_en_fastpitch_align.nemo"]
    for model in ("xls-r-2b", "w2v-bert-2.0"):
        assert (tmp_path / "models" / model / "model.safetensors").read_bytes() == b"tiny weights"
    assert not (work / "downloads").exists() or not any((work / "downloads").iterdir())

    # 3. the plan finds every input in place: nothing missing, every unit pending, exit 0
    assert main([*plan, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["missing"] == [] and shown["fetch_command"] is None
    states = {f"{stage['name']} {unit['name']}": unit["state"] for stage in shown["stages"] for unit in stage["units"]}
    assert len(states) == 16 and set(states.values()) == {"pending"}, states
    assert main(plan) == 0 and capsys.readouterr().out.splitlines()[-1] == "[plan] every unit can run"

    # 4. a second fetch finds everything present and asks the server for nothing
    asked = len(server.requests)
    assert main(fetch) == 0
    out = capsys.readouterr().out
    assert [line.split(" -> ")[0] for line in out.splitlines()[:-1]] == [f"[fetch] present: {name}" for name in needed]
    assert len(server.requests) == asked
