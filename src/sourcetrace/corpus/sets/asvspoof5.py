"""ASVspoof 5 as distributed: audio in `flac_T/`, `flac_D/`, `flac_E_eval/`; protocols
`ASVspoof5.{train,dev.track_1,eval.track_1}.tsv`, space-separated despite the name:
`SPEAKER FILE GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP`.

The attribution label is ATTACK_LABEL (A01-A32): train holds A01-A08, dev A09-A16, eval A17-A32,
so every dev and eval system is unseen in train. Eval adds codecs C01-C11 (`codec`). Bonafide rows
are kept, labelled `bonafide`.
"""

from __future__ import annotations

from pathlib import Path

from sourcetrace.corpus.sets.base import BONAFIDE, KEYS, DatasetFormat, Scan, protocol_fields

SYSTEMS = tuple(f"A{i:02d}" for i in range(1, 33))
SPLITS = (("train", "ASVspoof5.train.tsv", "flac_T"), ("dev", "ASVspoof5.dev.track_1.tsv", "flac_D"),
          ("eval", "ASVspoof5.eval.track_1.tsv", "flac_E_eval"))
PROTOCOL_FOLDERS = ("", "ASVspoof5_protocols")  # the tsv files at the root, or in the protocols archive's folder
FIELDS = "SPEAKER FILE GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP"


def _protocol(root: Path, name: str) -> Path:
    found = [root / folder / name for folder in PROTOCOL_FOLDERS if (root / folder / name).is_file()]
    return found[0] if found else root / name


def detect(root: Path) -> bool:
    return any(_protocol(root, name).is_file() for _, name, _ in SPLITS)


def scan(root: Path) -> Scan:
    out = Scan(columns=("speaker", "gender", "codec", "codec_q", "codec_seed", "attack_tag", "system", "key", "tmp",
                        "split"))
    for split, name, audio in SPLITS:
        for where, fields in protocol_fields(_protocol(root, name), 10, FIELDS, out):
            speaker, file, gender, codec, codec_q, codec_seed, tag, system, key, tmp = fields
            if key not in KEYS:
                out.skip(where, f"key {key!r} is neither {' nor '.join(KEYS)}")
                continue
            if (system == BONAFIDE) != (key == BONAFIDE) or (system != BONAFIDE and system not in SYSTEMS):
                out.skip(where, f"unknown system label {system!r} for key {key!r} (A01-A32 for spoof, "
                                "'bonafide' for bonafide)")
                continue
            out.rows.append((where, {
                "clip_id": file, "path": f"{audio}/{file}.flac", "architecture": system, "checkpoint": system,
                "prompt_id": file, "text": "", "speaker": speaker, "gender": gender, "codec": codec, "codec_q": codec_q,
                "codec_seed": codec_seed, "attack_tag": tag, "system": system, "key": key, "tmp": tmp, "split": split}))
    return out


FORMAT = DatasetFormat(
    name="asvspoof5", title="ASVspoof 5",
    download="https://zenodo.org/records/14498691",
    root="the folder holding flac_T/, flac_D/, flac_E_eval/ and the ASVspoof5.*.tsv protocols",
    detect=detect, scan=scan)
