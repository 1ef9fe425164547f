"""WaveFake as distributed: one folder per vocoder and training set (`ljspeech_melgan`,
`ljspeech_hifiGAN`, ..., `jsut_multi_band_melgan`), each of `*.wav` (LJSpeech's `LJ001-0001_gen.wav`).

Labels: `checkpoint` = the folder, `architecture` and `vocoder` = the vocoder (the folder without
its data set prefix, lower case), `speaker` = the data set the vocoder was trained on (ljspeech,
jsut), the prompt = the utterance id (every LJSpeech vocoder speaks the same utterances, so the
prompt-disjoint protocol is text-disjoint). WaveFake has no official split and ships no bonafide
audio (LJSpeech and JSUT are the real counterparts).
"""

from __future__ import annotations

from pathlib import Path

from sourcetrace.corpus.sets.base import DatasetFormat, Scan, relative

SETS = {"ljspeech": "en", "jsut": "ja"}  # the prefix of a vocoder folder -> the language of its speech
# WaveFake's folder of full TTS pipelines (common_voices_prompts_from_conformer_fastspeech2_pwg_ljspeech):
# a text-to-speech system, not one vocoder, so it has no vocoder label and is left out (reported).
TTS_PREFIX = "common_voices"


def _vocoder_folders(root: Path, out: Scan | None = None) -> list[tuple[Path, str, str]]:
    """(folder, training set, vocoder) of every `<set>_<vocoder>` folder of the root; every other
    folder reported into `out`: WaveFake's TTS folder as left out, any other as skipped."""
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        prefix, _, vocoder = folder.name.partition("_")
        if prefix.lower() in SETS and vocoder:
            found.append((folder, prefix.lower(), vocoder.lower()))
        elif out is None:
            continue
        elif folder.name.lower().startswith(TTS_PREFIX):
            out.leave_out(str(folder), "WaveFake's TTS-pipeline folder, not one vocoder: no vocoder label, not imported")
        else:
            out.skip(str(folder), f"not a <{'|'.join(SETS)}>_<vocoder> folder: its clips are not imported")
    return found


def detect(root: Path) -> bool:
    return root.is_dir() and any(next(folder.glob("*.wav"), None) is not None for folder, _, _ in _vocoder_folders(root))


def scan(root: Path) -> Scan:
    out = Scan(columns=("vocoder", "speaker", "language"))
    for folder, training_set, vocoder in _vocoder_folders(root, out):
        wavs = sorted(folder.glob("*.wav"))
        if not wavs:
            out.skip(str(folder), "no *.wav in this vocoder folder")
        for wav in wavs:
            stem = wav.stem
            prompt = stem[:-4] if stem.endswith("_gen") else stem
            out.rows.append((str(wav), {
                "clip_id": f"{folder.name}/{stem}", "path": relative(root, wav), "architecture": vocoder,
                "checkpoint": folder.name, "prompt_id": prompt, "text": "", "vocoder": vocoder,
                "speaker": training_set, "language": SETS[training_set]}))
    if not out.rows:
        out.skip(str(root), "no <ljspeech|jsut>_<vocoder>/*.wav folder")
    return out


FORMAT = DatasetFormat(
    name="wavefake", title="WaveFake", download="https://zenodo.org/records/5642694",
    root="the folder holding ljspeech_<vocoder>/ and jsut_<vocoder>/ folders",
    detect=detect, scan=scan)
