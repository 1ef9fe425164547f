import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sourcetrace.core.audio import AudioRejected, load_audio
from sourcetrace.corpus import Corpus, ManifestError, import_corpus


def test_import_folder_tree(speech_tree, tmp_path):
    corpus = import_corpus(speech_tree, tmp_path / "c")
    assert len(corpus.rows) == 48
    again = Corpus.read(tmp_path / "c")
    row = next(r for r in again.rows if r.clip_id == "en-us/step-a/p3")
    assert row.architecture == "en-us" and row.checkpoint == "en-us/step-a" and row.prompt_id == "p3"
    assert row.text == (speech_tree / "en-us/step-a/p3.txt").read_text()
    assert (tmp_path / "c" / row.path).read_bytes() == (speech_tree / "en-us/step-a/p3.wav").read_bytes()


def test_import_csv_with_defaults_and_extras(speech_tree, tmp_path):
    src = tmp_path / "list.csv"
    shutil.copytree(speech_tree / "en-us", tmp_path / "audio")
    src.write_text("path,architecture,checkpoint,vocoder,my_note\n"
                   "audio/step-a/p0.wav,fastpitch,fastpitch/pretrained,hifigan-nemo,hello\n"
                   "audio/step-b/p0.wav,vits,vits/step-050000,,x\n")
    corpus = import_corpus(src, tmp_path / "c")
    rows = Corpus.read(tmp_path / "c").rows
    assert [r.clip_id for r in rows] == ["fastpitch/pretrained/p0", "vits/step-050000/p0"]
    assert rows[0].vocoder == "hifigan-nemo" and rows[0].extra["my_note"] == "hello"  # unknown columns kept
    assert rows[1].prompt_id == "p0" and rows[1].text == ""
    assert corpus.columns[:6] == ["clip_id", "path", "architecture", "checkpoint", "prompt_id", "text"]


def test_import_protocol_list(speech_tree, tmp_path):
    shutil.copytree(speech_tree, tmp_path / "data")
    src = tmp_path / "protocol.txt"
    src.write_text("data/en-us/step-a/p0.wav|spk1|tts_a\ndata/en-gb-x-rp/step-a/p1.wav|spk2|tts_b\n")
    rows = import_corpus(src, tmp_path / "c").rows
    assert [(r.architecture, r.checkpoint, r.speaker) for r in rows] == [("tts_a", "tts_a", "spk1"), ("tts_b", "tts_b", "spk2")]


@pytest.mark.parametrize("content, message", [
    ("path,architecture,checkpoint\na.wav,vits,vits/pt\nb.wav,vits,vits/pt\nmissing.wav,vits,vits/x\n", "line 4: missing file"),
    ("path,architecture,checkpoint\na.wav,vits,shared\nb.wav,fastpitch,shared\n", "line 3: checkpoint 'shared' belongs to architecture 'fastpitch'"),
    ("path,architecture,checkpoint,clip_id\na.wav,vits,vits/pt,x\nb.wav,vits,vits/pt,x\n", "line 3: duplicate clip_id 'x'"),
    ("path,architecture,checkpoint\na.wav,,vits/pt\n", "line 2: empty architecture"),
    ("path,architecture,checkpoint\n../outside.wav,vits,vits/pt\n", "line 2: path '../outside.wav' escapes"),
    ("path,architecture\na.wav,vits\n", "lacks required column(s): checkpoint"),
])
def test_import_errors_name_file_row_and_problem(tmp_path, content, message):
    for name in ("a.wav", "b.wav", "outside.wav"):
        sf.write(tmp_path / name, np.zeros(1600, np.float32), 16000)
    (tmp_path / "in").mkdir()
    for name in ("a.wav", "b.wav"):
        shutil.copy(tmp_path / name, tmp_path / "in" / name)
    src = tmp_path / "in" / "list.csv"
    src.write_text(content)
    with pytest.raises(ManifestError) as err:
        import_corpus(src, tmp_path / "out")
    assert str(src) in str(err.value) and message in str(err.value)
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_read_rejects_a_manifest_edited_into_a_bad_state(speech_tree, tmp_path):
    corpus = import_corpus(speech_tree, tmp_path / "c")
    manifest = corpus.manifest_path
    lines = manifest.read_text().splitlines()
    lines[5] = lines[5].replace(lines[5].split(",")[1], "/etc/passwd", 1)
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"(?s)manifest.csv.*line 6: path '/etc/passwd' is absolute"):
        Corpus.read(tmp_path / "c")


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_24"), ("OGG", "VORBIS"),
                                          ("MP3", "MPEG_LAYER_III")])
def test_load_audio_formats_rates_channels(tmp_path, fmt, subtype):
    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], axis=1)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, stereo, 44100, format=fmt, subtype=subtype)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16000) <= (1 if fmt != "MP3" else 1200)  # mp3 frames pad the ends
    spectrum = np.abs(np.fft.rfft(wave[2000:14000]))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 440) < 3  # the tone survives resampling


def test_load_audio_rejects_with_reason(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    bad = np.zeros(800, np.float32)
    bad[3] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really")
    for name, reason in [("empty.wav", "empty"), ("nan.wav", "non-finite"), ("junk.wav", "unreadable")]:
        with pytest.raises(AudioRejected, match=reason):
            load_audio(tmp_path / name)
    sf.write(tmp_path / "silence.wav", np.zeros(1600, np.float32), 16000)
    assert not load_audio(tmp_path / "silence.wav").any()  # silence is valid


def test_datasets_folder_never_shadows_hugging_face_datasets():
    """With the repo root first on sys.path, `import datasets` must not find our folder as a package."""
    root = Path(__file__).resolve().parents[1]
    assert not (root / "datasets" / "__init__.py").exists()
    code = "import importlib.util as u; s = u.find_spec('datasets'); print(s and s.origin)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert "__init__.py" not in out or str(root / "datasets") not in out


def test_every_module_of_the_namespace_imports():
    """Each top-level folder is a `sourcetrace` subpackage; a module missing from the installed link
    tree (a new file after setup) fails here: rerun tools/setup.sh."""
    import importlib

    root = Path(__file__).resolve().parents[1]
    folders = {"src/sourcetrace": "sourcetrace", "attribution": "sourcetrace.attribution",
               "benchmark": "sourcetrace.benchmark", "datasets": "sourcetrace.datasets",
               "checkpoints": "sourcetrace.checkpoints"}
    names = []
    for folder, package in folders.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            names.append(".".join((package, *[p for p in parts if p != "__init__"])))
    assert len(names) > 30
    for name in names:
        importlib.import_module(name)


def test_corpus_verify_finds_corrupted_truncated_and_missing_clips(speech_tree, tmp_path, capsys):
    from sourcetrace.cli import main

    corpus = import_corpus(speech_tree, tmp_path / "c")
    row = corpus.rows[0]
    assert row.sha256 and row.sample_rate == 22050 and float(row.duration_s) > 0.5
    assert main(["corpus", "verify", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    rows = corpus.rows
    wave, rate = sf.read(tmp_path / "c" / rows[0].path)
    sf.write(tmp_path / "c" / rows[0].path, wave[: len(wave) // 2], rate, subtype="PCM_16")  # truncated
    damaged = bytearray((tmp_path / "c" / rows[1].path).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte in the samples
    (tmp_path / "c" / rows[1].path).write_bytes(bytes(damaged))
    (tmp_path / "c" / rows[2].path).unlink()
    assert main(["corpus", "verify", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert f"line 2 ({rows[0].path}): sha256 differs" in err and "(truncated?)" in err
    assert f"line 3 ({rows[1].path}): sha256 differs" in err
    assert f"line 4 ({rows[2].path}): missing file" in err
