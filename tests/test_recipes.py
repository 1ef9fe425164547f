"""Corpus recipes: expansion into the study's conditions, sharded and resumable generation (kill -9
included), the manifest checked against the recipe. Tiny untrained models, CPU."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

pytest.importorskip("nemo", reason="the TTS stacks are installed by tools/setup.sh")
pytest.importorskip("TTS", reason="the TTS stacks are installed by tools/setup.sh")

from sourcetrace.benchmark.protocol import ClipTable, build_splits, load_suite
from sourcetrace.checkpoints.registry import load_schedule
from sourcetrace.cli import main
from sourcetrace.core.espeak import sentences
from sourcetrace.core.naming import step_name, zero_init_name
from sourcetrace.core.plugins import STUDY_ARCHITECTURES as ARCHITECTURES
from sourcetrace.corpus import Corpus
from sourcetrace.datasets.prompts import Prompt, write_prompts
from sourcetrace.generators import build_generator
from sourcetrace.pipeline.recipe import RecipeError, expand, load_recipe
from sourcetrace.pipeline.regenerate import condition_counts, regenerate

pytestmark = [pytest.mark.slow, pytest.mark.tts]

N_PROMPTS = 5
VOCODERS = {"fastpitch": ("nemo-hifigan", 0), "gradtts": ("hifigan", 1), "matcha": ("hifigan", 2)}


def recipe_text(roles=None, extra_arch="") -> str:
    lines = ['[corpus]', 'prompts = "prompts.tsv"', 'seed = 0', 'schedule = "mini"']
    if roles is not None:
        lines.append(f"roles = {roles!r}".replace("'", '"'))
    for arch in sorted(ARCHITECTURES):
        lines += [f"[corpus.architectures.{arch}]", f'runs = "runs/{arch}"', f'pretrained = "runs/{arch}/pretrained"',
                  f'finetuned = "runs/{arch}/ft"']
        if arch in VOCODERS:
            lines.append(f'vocoder = "hifigan-{arch}"')
    lines.append(extra_arch)
    for arch, (kind, seed) in VOCODERS.items():
        lines += [f"[corpus.vocoders.hifigan-{arch}]", f'kind = "{kind}"', 'config = "tiny"', f"seed = {seed}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A folder with every checkpoint the mini schedule names (one tiny model per architecture,
    saved under each name: the corpus structure is what is tested), prompts and a recipe."""
    root = tmp_path_factory.mktemp("study")
    write_prompts(root / "prompts.tsv", [Prompt(f"LJ-{i:03d}", t) for i, t in enumerate(sentences(N_PROMPTS, seed=5))])
    schedule = load_schedule("mini")
    for arch in sorted(ARCHITECTURES):
        generator = build_generator(arch, "tiny", seed=1)
        runs = root / "runs" / arch
        names = [step_name(s) for s in schedule.steps] + [zero_init_name(s) for s in schedule.zero_init_seeds]
        for name in names:
            generator.save(runs / "checkpoints" / name, 0, role="scheduled")
        generator.save(runs / "pretrained", 0, role="pretrained")
        generator.save(runs / "ft", 0, role="finetuned")
    (root / "recipe.toml").write_text(recipe_text())
    return root


@pytest.fixture(scope="module")
def zero_init(study, tmp_path_factory):
    """The zero-init checkpoints' corpus (4 architectures x 3 seeds x N_PROMPTS clips), made once in
    this process from `zero.toml`: the reference that several tests compare against, or copy and damage."""
    (study / "zero.toml").write_text(recipe_text(roles=["zero-init"]))
    out = tmp_path_factory.mktemp("zero-init") / "corpus"
    report = regenerate(load_recipe(study / "zero.toml", base=study), out, progress=False, log=lambda m: None)
    assert report.made == 4 * 3 * N_PROMPTS and report.manifest_written
    return out


def test_expansion_has_every_condition_of_the_study(study):
    recipe = load_recipe(study / "recipe.toml", base=study)
    jobs = expand(recipe)
    # 14 checkpoints an architecture (pretrained, 9 scheduled, 3 zero-init, fine-tuned); the 10
    # pretrained + scheduled checkpoints of each mel architecture again with the 2 other HiFi-GANs.
    assert len(jobs) == 4 * 14 + 3 * 10 * 2
    counts = condition_counts(jobs, N_PROMPTS)
    assert counts == {"default": 56 * N_PROMPTS, "swapped to hifigan-fastpitch": 20 * N_PROMPTS,
                      "swapped to hifigan-gradtts": 20 * N_PROMPTS, "swapped to hifigan-matcha": 20 * N_PROMPTS}
    assert not any(j.swapped for j in jobs if j.architecture == "vits")
    assert {j.label for j in jobs if j.role == "finetuned"} == {f"{a}/ft-9136" for a in ARCHITECTURES}


def test_fine_tunes_on_several_speakers_expand_to_one_checkpoint_each(study):
    text = recipe_text().replace('schedule = "mini"', 'schedule = "mini"\nfinetune_speakers = ["9136", "92", "6097"]')
    text = text.replace('finetuned = "runs/', 'finetuned = "ft-{speaker}/').replace('/ft"', '/checkpoints/ft-{speaker}"')
    (study / "speakers.toml").write_text(text)
    jobs = [j for j in expand(load_recipe(study / "speakers.toml", base=study)) if j.role == "finetuned"]
    assert {(j.label, j.speaker) for j in jobs} == {(f"{a}/ft-{s}", s) for a in ARCHITECTURES
                                                          for s in ("9136", "92", "6097")}
    assert all(j.checkpoint_path == study / f"ft-{j.speaker}" / j.architecture / "checkpoints" / f"ft-{j.speaker}" for j in jobs)
    assert not any(j.swapped for j in jobs)  # fine-tunes keep their own vocoder, as the study's


def test_an_architecture_can_ask_for_fewer_roles_than_the_corpus(study):
    text = recipe_text().replace('[corpus.architectures.vits]\n', '[corpus.architectures.vits]\nroles = ["zero-init"]\n')
    (study / "roles.toml").write_text(text)
    jobs = expand(load_recipe(study / "roles.toml", base=study))
    assert {j.role for j in jobs if j.architecture == "vits"} == {"zero-init"}
    assert {j.role for j in jobs if j.architecture == "gradtts"} == {"pretrained", "scheduled", "zero-init", "finetuned"}


def test_swap_vocoders_vocode_every_swapped_mel_checkpoint_once_more(study):
    text = recipe_text().replace('schedule = "mini"', 'schedule = "mini"\nswap_vocoders = ["extra"]')
    (study / "extra.toml").write_text(text + '[corpus.vocoders.extra]\nkind = "hifigan"\nconfig = "tiny"\nseed = 9\n')
    jobs = expand(load_recipe(study / "extra.toml", base=study))
    extra = [j for j in jobs if j.vocoder == "extra"]
    assert len(jobs) == 4 * 14 + 3 * 10 * 3 and len(extra) == 3 * 10  # pretrained + 9 scheduled, 3 mel architectures
    assert all(j.swapped and j.role in ("pretrained", "scheduled") and j.architecture != "vits" for j in extra)
    (study / "owned.toml").write_text(text.replace('swap_vocoders = ["extra"]', 'swap_vocoders = ["hifigan-matcha"]'))
    with pytest.raises(RecipeError, match="swap_vocoders names 'hifigan-matcha'"):
        load_recipe(study / "owned.toml", base=study)


@pytest.mark.parametrize("text, message", [
    ('[corpus]\nprompts = "p.tsv"\nschedule = "mini"\n[corpus.architectures.tacotron]\nruns = "r"\n', "unknown architecture"),
    ('[corpus]\nprompts = "p.tsv"\nschedule = "mini"\n[corpus.architectures.vits]\nruns = "r"\nvocoder = "x"\n',
     "end to end"),
    ('[corpus]\nprompts = "p.tsv"\nschedule = "mini"\n[corpus.architectures.gradtts]\nruns = "r"\nvocoder = "x"\n',
     "must name one of"),
    ('[corpus]\nprompts = "p.tsv"\nschedule = "mini"\nspeakers = 2\n', "unknown key"),
    ('[corpus]\nprompts = "p.tsv"\nschedule = "mini"\nroles = ["best"]\n', "roles"),
    ('[corpus]\nprompts = "p.tsv"\nschedule = "mini"\n[corpus.vocoders.v]\nkind = "hifigan"\n', "either 'weights'"),
    ('[corpus]\nprompts = "p.tsv"\nschedule = "mini"\n[corpus.architectures.xtts]\nruns = "r"\n', "give 'references'"),
    ('[corpus]\nprompts = "p.tsv"\nschedule = "mini"\n[corpus.architectures.vits]\nruns = "r"\nreferences = ["a.wav"]\n',
     "takes no 'references'"),
])
def test_bad_recipes_are_refused_with_the_file_and_key(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(RecipeError, match=message) as info:
        load_recipe(tmp_path / "bad.toml", base=tmp_path)
    assert "bad.toml" in str(info.value)


def _synth(study, out):
    return subprocess.Popen([sys.executable, "-m", "sourcetrace.cli", "synth", "--recipe", "recipe.toml", "--out",
                             str(out), "--device", "cpu"], cwd=study, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _journal_lines(out):
    return sum(p.read_text().count("\n") for p in (out / "parts").glob("*.jsonl")) if (out / "parts").is_dir() else 0


def _synth_here(study, out, monkeypatch, *extra, recipe="recipe.toml"):
    """`synth --recipe` in this process, one thread like `_synth`'s processes: the same bytes, without
    a fresh process's 15-25 s of TTS-stack imports where no process boundary is being tested."""
    monkeypatch.chdir(study)
    return main(["synth", "--recipe", recipe, "--out", str(out), "--device", "cpu", "--threads", "1", *extra])


def test_recipe_corpus_satisfies_every_table1_protocol_and_survives_kill_9(study, tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole"
    assert _synth_here(study, whole, monkeypatch) == 0
    output = capsys.readouterr().out
    assert f"default: {56 * N_PROMPTS} clips" in output and f"swapped to hifigan-matcha: {20 * N_PROMPTS} clips" in output
    corpus = Corpus.read(whole)
    assert len(corpus.rows) == (4 * 14 + 3 * 10 * 2) * N_PROMPTS
    table = ClipTable.from_records(corpus.rows)
    for protocol in load_suite("table1"):
        assert build_splits(protocol, table, [0]), protocol.name  # raises if the corpus lacks anything
    row = next(r for r in corpus.rows if r.vocoder_swapped)
    assert row.vocoder != f"hifigan-{row.architecture}" and len(row.vocoder_sha256) == 64
    assert {r.speaker for r in corpus.rows if r.checkpoint.endswith("ft-9136")} == {"9136"}

    # kill -9 in the middle, twice, then resume: the same manifest and the same audio bytes.
    cut = tmp_path / "cut"
    for target in (len(corpus.rows) // 8, len(corpus.rows) * 3 // 5):  # journal lines: early, then past half
        run = _synth(study, cut)
        while _journal_lines(cut) < target and run.poll() is None:
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert not (cut / "manifest.csv").exists()
    assert _synth_here(study, cut, monkeypatch) == 0  # the resume: any process, this one included
    assert (cut / "manifest.csv").read_bytes() == (whole / "manifest.csv").read_bytes()
    for r in corpus.rows:
        assert (cut / r.path).read_bytes() == (whole / r.path).read_bytes()
    assert not list(cut.rglob("*.tmp*"))  # nothing half-written left behind

    # A rerun has nothing to do; verify checks audio and the recipe (whose relative paths resolve
    # against the folder it is run from: `_synth_here` runs from the study's).
    assert _synth_here(study, whole, monkeypatch) == 0
    assert f"0 clips made, {len(corpus.rows)} already there" in capsys.readouterr().out
    assert main(["corpus", "verify", str(whole), "--recipe", "recipe.toml"]) == 0


def test_shards_build_the_same_corpus(study, zero_init, tmp_path, monkeypatch, capsys):
    out = tmp_path / "sharded"
    for k in range(3):
        assert _synth_here(study, out, monkeypatch, "--shard", f"{k}/3", recipe="zero.toml") == 0
        assert (out / "manifest.csv").exists() == (k == 2), capsys.readouterr().out  # written by whoever completes it
    assert (out / "manifest.csv").read_bytes() == (zero_init / "manifest.csv").read_bytes()

    # Two unsharded processes on one folder share the jobs: every clip made once, each journal line once.
    both = [subprocess.Popen([sys.executable, "-m", "sourcetrace.cli", "synth", "--recipe", "zero.toml", "--out",
                              str(tmp_path / "both"), "--device", "cpu"], cwd=study, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            for _ in range(2)]
    outputs = [run.communicate(timeout=900)[0] for run in both]
    assert [run.returncode for run in both] == [0, 0], outputs
    made = [int(re.search(r"\[synth\] (\d+) clips made", text).group(1)) for text in outputs]
    assert sum(made) == 4 * 3 * N_PROMPTS, outputs
    for journal in (tmp_path / "both" / "parts").glob("*.jsonl"):
        lines = journal.read_text().splitlines()
        assert len(lines) == N_PROMPTS == len({json.loads(line)["clip_id"] for line in lines}), journal
    assert (tmp_path / "both" / "manifest.csv").read_bytes() == (zero_init / "manifest.csv").read_bytes()


def test_verify_finds_corruption_and_departures_from_the_recipe(study, zero_init, tmp_path, capsys, monkeypatch):
    out = tmp_path / "c"
    shutil.copytree(zero_init, out)
    recipe = str(study / "zero.toml")
    monkeypatch.chdir(study)
    assert main(["corpus", "verify", str(out), "--recipe", recipe]) == 0
    corpus = Corpus.read(out)
    victim = out / corpus.rows[5].path
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])  # truncated
    corpus.rows[7] = replace(corpus.rows[7], seed=12345)                     # provenance edited
    del corpus.rows[9]                                                        # a clip dropped
    corpus.write()
    capsys.readouterr()
    assert main(["corpus", "verify", str(out), "--recipe", recipe]) == 1
    err = capsys.readouterr().err
    assert corpus.rows[5].path in err and "seed is '12345'" in err and "1 clip(s) of the recipe are not" in err


def test_a_bad_checkpoint_is_reported_and_skipped_the_rest_kept(study, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "study"
    shutil.copytree(study, broken, ignore=shutil.ignore_patterns("*.toml"))
    (broken / "recipe.toml").write_text(recipe_text(roles=["zero-init"]))
    (broken / "runs" / "matcha" / "checkpoints" / "zero-init-s2" / "model.safetensors").write_bytes(b"junk")
    torn = tmp_path / "c" / "audio" / "gradtts" / "zero-init-s1" / ".LJ-000.wav.x1y2.tmp"  # a kill -9 mid-write
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"RIFF")
    monkeypatch.chdir(broken)
    assert main(["synth", "--recipe", "recipe.toml", "--out", str(tmp_path / "c"), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "[synth] failed: matcha/zero-init-s2 (default; " in captured.err and "model.safetensors" in captured.err
    assert "manifest not written: 1 job(s) failed" in captured.out
    made = list((tmp_path / "c" / "audio").rglob("*.wav"))
    assert len(made) == (4 * 3 - 1) * N_PROMPTS  # every good clip kept
    assert not torn.exists()


def test_batched_synthesis_is_deterministic_and_keeps_every_clips_length(study, zero_init, tmp_path):
    """Grad-TTS and Matcha-TTS synthesise [corpus] batch_size prompts at once: padded inputs do not
    change a clip's length (durations come from the encoder), a rerun gives the same bytes, and
    the manifest's seeds are those of the chunks, as verify checks."""
    (study / "batched.toml").write_text(recipe_text(roles=["zero-init"]).replace(
        'schedule = "mini"', 'schedule = "mini"\nbatch_size = 4'))
    runs = {"single": {r.clip_id: r for r in Corpus.read(zero_init).rows}}
    for name in ("a", "b"):
        regenerate(load_recipe(study / "batched.toml", base=study), tmp_path / name, progress=False, log=lambda m: None)
        runs[name] = {r.clip_id: r for r in Corpus.read(tmp_path / name).rows}
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    batched = [c for c, r in runs["a"].items() if r.batch_size == 4]
    assert {runs["a"][c].architecture for c in batched} == {"gradtts", "matcha"}
    for clip in runs["a"]:
        assert runs["a"][clip].duration_s == runs["single"][clip].duration_s, clip
    assert any(runs["a"][c].sha256 != runs["single"][c].sha256 for c in batched)  # other noise
    from sourcetrace.pipeline.regenerate import check_against_recipe

    assert check_against_recipe(Corpus.read(tmp_path / "a"), load_recipe(study / "batched.toml", base=study)) == []
