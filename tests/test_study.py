"""`sourcetrace run`: a micro version of recipes/mini.toml end to end, a rerun that does nothing,
and, through a real Slurm cluster, sharded stages giving the same outputs as the local backend and
a preempted training job that is requeued and resumes bit for bit."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("nemo", reason="the TTS stacks are installed by tools/setup.sh")
pytest.importorskip("TTS", reason="the TTS stacks are installed by tools/setup.sh")

from sourcetrace.cli import main
from sourcetrace.corpus import ClipRecord, Corpus
from sourcetrace.pipeline.recipe import RecipeError, expand, load_study_recipe
from sourcetrace.pipeline.study import STAGES, Study

pytestmark = [pytest.mark.slow, pytest.mark.tts]

MINI = Path(__file__).resolve().parents[1] / "recipes" / "mini.toml"


def micro_recipe(folder: Path) -> Path:
    """recipes/mini.toml with the `micro` schedule and a smaller dataset: the same stages and
    conditions, 5 prompts (val + test) where the mini study has 20."""
    text = MINI.read_text()
    text = text.replace('make_mini = { train = 40, val = 4, test = 16, hifitts = 20 }',
                        'make_mini = { train = 8, val = 1, test = 4, hifitts = 4 }')
    text = text.replace('schedule = "mini"', 'schedule = "micro"').replace("step-000100", "step-000010")
    text = text.replace("seeds = [0, 1, 2]", "seeds = [0]")
    text = text.replace('device = "cpu"', 'device = "cpu"\nthreads = 1  # the same audio bytes on every backend')
    text = text.replace("synth_shards = 4", "synth_shards = 2")  # as many array tasks as the test cluster's CPUs
    assert text.count("step-000010") == 4 and 'schedule = "micro"' in text and "synth_shards = 2" in text
    path = folder / "micro.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("micro")
    recipe = micro_recipe(work)
    assert main(["run", str(recipe), "--workdir", str(work / "out")]) == 0
    return recipe, work / "out"


def test_micro_study_from_nothing_to_a_leaderboard(local_run):
    _, out = local_run
    corpus = Corpus.read(out / "corpus")
    assert len(corpus.rows) == (4 * 14 + 3 * 10 * 2) * 5  # every checkpoint and vocoder condition, 5 prompts
    results = sorted(p.name for p in (out / "results").glob("table1-*.json"))
    assert len(results) == 12 * 2  # 12 conditions x 2 extractors
    page = (out / "site" / "index.html").read_text()
    assert "sourcetrace miniature study (tiny models" in page  # the recipe's title
    assert (out / "results" / "figures").is_dir()
    for stage in STAGES:
        assert (out / "stages" / f"{stage}.json").is_file()
    for arch in ("fastpitch", "gradtts", "matcha", "vits"):  # loss curves: TensorBoard is on unless the recipe says not
        assert list((out / "runs" / arch / "tensorboard").glob("events.out.tfevents.*")), arch


def test_a_rerun_with_nothing_changed_does_nothing(local_run, capsys):
    recipe, out = local_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", str(recipe), "--workdir", str(out)]) == 0
    assert "everything is up to date: nothing to do" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_the_plan_of_a_finished_study_is_all_done(local_run, capsys):
    recipe, out = local_run
    capsys.readouterr()
    assert main(["run", str(recipe), "--workdir", str(out), "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in plan["stages"] if s["up_to_date"]] == list(STAGES)
    assert {u["state"] for s in plan["stages"] for u in s["units"]} == {"done"} and plan["missing"] == []
    assert main(["run", str(recipe), "--workdir", str(out), "--plan"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "[plan] every unit is done: a run has nothing to do"


def test_a_changed_section_reruns_its_stage_and_those_after(local_run, tmp_path):
    recipe, out = local_run
    study = Study(recipe, out)
    assert all(study.up_to_date(s) for s in STAGES)
    changed = tmp_path / "changed.toml"
    changed.write_text(recipe.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    study = Study(changed, out)
    assert [s for s in STAGES if not study.up_to_date(s)] == ["bench"]


FINE_TUNES = ("fastpitch/finetuned/9136", "gradtts/finetuned/9136", "matcha/finetuned/9136", "vits/finetuned/9136")


def test_a_unit_gives_the_same_bytes_alone_in_a_fresh_process(local_run, tmp_path):
    """The local run's fine-tunes ran after every other training unit of the study, in one process.
    Here they run in a fresh process, FastPitch's first (alone: its first alignment search used to
    reset the thread count mid-unit when no earlier unit had), the others after it: whatever ran
    before a unit in its process must not change a byte of what it writes."""
    recipe, local = local_run
    work = tmp_path / "fresh"
    shutil.copytree(local / "data", work / "data")
    shutil.copytree(local / "runs", work / "runs", ignore=lambda folder, names: [
        n for n in names if n.endswith("-ft") or (Path(folder).name == "features" and n == "hifitts")])
    script = ("import sys; from sourcetrace.pipeline.study import Study; study = Study(sys.argv[1], sys.argv[2]); "
              "units = {u.name: u for u in study.units('train')}; [study.run_unit(units[n]) for n in sys.argv[3:]]")
    done = subprocess.run([sys.executable, "-c", script, str(recipe), str(work), *FINE_TUNES], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for unit in FINE_TUNES:
        run = f"runs/{unit.split('/')[0]}-ft/checkpoints"
        ours = sorted(p.relative_to(work / run) for p in (work / run).rglob("*") if p.is_file())
        assert ours and ours == sorted(p.relative_to(local / run) for p in (local / run).rglob("*") if p.is_file())
        for rel in ours:
            assert (work / run / rel).read_bytes() == (local / run / rel).read_bytes(), f"{unit}: {rel} differs"


def test_bad_run_recipes_name_the_problem(tmp_path):
    text = MINI.read_text()
    for bad, message in [(text.replace("[benchmark]", "[benchmarks]"), "unknown table"),
                         (text.replace('config = "tiny"\n', ""), "'config'"),
                         (text.replace("synth_shards = 4", "shards = 4"), "unknown key"),
                         (text.replace("step-000100", "best"), "step-N"),
                         (text.replace("hifitts = 20 }", "hifitts = 0 }"), r"make_mini.hifitts must be an integer 1\.\."),
                         (text.replace("pretrained_seed = 1000\n", 'pretrained_seed = 1000\ntensorboard = "yes"\n'),
                          "tensorboard must be a boolean"),
                         (text.replace("timeout_min = 30", "timeout_min = 0"), r"\[slurm\]: timeout_min must be an integer 1"),
                         (text.replace('seed = 0\n\n[corpus.architectures.fastpitch]',
                                       'seed = 0\nfinetune_speakers = ["9136", "92"]\n\n[corpus.architectures.fastpitch]'),
                          r"finetuned' path must hold \{speaker\}"),
                         (text.replace('seed = 0\n\n[corpus.architectures.fastpitch]',
                                       'seed = 0\nfinetune_speakers = ["../x"]\n\n[corpus.architectures.fastpitch]'),
                          "finetune_speakers must be distinct speaker ids"),
                         (text.replace('{ spec = "lfcc",', '{ spek = "lfcc",'), r"unknown key\(s\) \['spek'\]"),
                         (text.replace("[features]\n", "[features]\nmax_seconds = -1\n"),
                          r"\[features\]: max_seconds must be >= 0 \(0: no limit\), got -1"),
                         (text.replace('suite = "table1"', 'suite = "table9"'), r"\[benchmark\]: unknown suite 'table9'"),
                         (text.replace('suite = "table1"', 'protocols = ["nope"]'), r"\[benchmark\]: .*nope"),
                         (text.replace('suite = "table1"', 'suite = "table1"\nprotocols = ["indomain"]'),
                          "either suite"),
                         (text.replace('pretrained = "runs/vits-pretrained/checkpoints/step-000100"\n', ""),
                          "give 'pretrained' too")]:
        (tmp_path / "bad.toml").write_text(bad)
        with pytest.raises(RecipeError, match=message):
            Study(tmp_path / "bad.toml", tmp_path)
    beyond = (MINI.parent / "mini-beyond.toml").read_text()
    (tmp_path / "bad.toml").write_text(beyond.replace('roles = ["zero-init"]', 'roles = ["zero-init", "scheduled"]'))
    with pytest.raises(RecipeError, match=r"corpus.architectures.xtts\]: xtts is inference-only"):
        Study(tmp_path / "bad.toml", tmp_path)


def test_the_clip_length_limit_of_features_and_bench_is_a_recipe_setting(tmp_path):
    text = MINI.read_text()
    assert Study(MINI, tmp_path).recipe.max_clip_seconds == 60.0  # the default, as `features --max-seconds`
    for value, parsed in (("0", None), ("90.5", 90.5)):
        (tmp_path / "r.toml").write_text(text.replace("[features]\n", f"[features]\nmax_seconds = {value}\n"))
        assert Study(tmp_path / "r.toml", tmp_path).recipe.max_clip_seconds == parsed


@pytest.mark.parametrize("name", sorted(p.name for p in MINI.parent.glob("*.toml")))
def test_shipped_recipes_read_into_typed_tables(name, tmp_path):
    recipe = load_study_recipe(MINI.parent / name, base=tmp_path)
    assert recipe.study.title and recipe.features and (recipe.benchmark.suite or recipe.benchmark.protocols)
    assert all(arch.runs is None or arch.runs.is_relative_to(tmp_path) for arch in recipe.corpus.architectures.values())
    jobs = expand(recipe.corpus)
    assert jobs and len({(j.label, j.vocoder, j.swapped) for j in jobs}) == len(jobs)
    if name == "speakers.toml":  # every HiFi-TTS speaker, fine-tuned from each official checkpoint
        tuned = {j.label for j in jobs if j.role == "finetuned"}
        assert len(recipe.corpus.finetune_speakers) == 10 and len(tuned) == 10 * len(recipe.corpus.architectures)
    # Every protocol the recipe benchmarks can split the corpus the recipe makes (labels as synth writes them).
    from sourcetrace.benchmark.protocol import ClipTable, build_splits
    from sourcetrace.core.naming import clip_location
    from sourcetrace.generators import generator_class
    from sourcetrace.vocoders import vocoder_class

    rows = []
    for job in jobs:
        family = vocoder_class(recipe.corpus.vocoders[job.vocoder].kind).family if job.vocoder else ""
        for k in range(60):
            rows.append(ClipRecord(
                clip_id=clip_location(job.label, f"P{k:03d}", job.vocoder or "", job.swapped)[0], path="",
                architecture=job.architecture, checkpoint=job.label, prompt_id=f"P{k:03d}", text="",
                vocoder=job.vocoder or "", vocoder_swapped=job.swapped, speaker=job.speaker, vocoder_family=family,
                implementation=f"{generator_class(job.architecture).package} 1.0"))
    table = ClipTable.from_records(rows)
    for protocol in Study(MINI.parent / name, tmp_path).protocols():
        assert build_splits(protocol, table, [0]), protocol.name


def _slurm_up() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")  # module scope: checked before the micro study is built
def slurm_cluster():
    """A reachable Slurm cluster and submitit; a skip without them, a failure where CI requires them."""
    if not _slurm_up():
        if os.environ.get("SOURCETRACE_REQUIRE_SLURM") == "1":
            pytest.fail("SOURCETRACE_REQUIRE_SLURM=1 but sinfo fails: start tools/slurm-localhost.sh")
        pytest.skip("no Slurm cluster here (CI starts one: tools/slurm-localhost.sh)")
    pytest.importorskip("submitit")


@pytest.mark.slurm
def test_sharded_stages_through_slurm_match_the_local_backend(slurm_cluster, local_run, tmp_path):
    recipe, local = local_run
    work = tmp_path / "slurm"
    work.mkdir()
    # Datasets and training from the local run; synthesis and features (2 shards each) on Slurm.
    for part in ("data", "runs", "models"):
        shutil.copytree(local / part, work / part)
    shutil.copytree(local / "stages", work / "stages", ignore=shutil.ignore_patterns("synth.json", "features.json",
                                                                                    "bench.json"))
    assert main(["run", str(recipe), "--workdir", str(work), "--backend", "slurm", "--stages", "synth,features"]) == 0
    assert (work / "corpus" / "manifest.csv").read_bytes() == (local / "corpus" / "manifest.csv").read_bytes()
    for row in Corpus.read(local / "corpus").rows:
        assert (work / "corpus" / row.path).read_bytes() == (local / "corpus" / row.path).read_bytes()
    # The job array's feature parts hold exactly the vectors the local run computed.
    import numpy as np

    from sourcetrace.attribution.extractors import build_extractor
    from sourcetrace.attribution.store import FeatureStore

    study = Study(recipe, work)
    for spec, _ in study.extractor_specs():
        extractor = build_extractor(spec, device="cpu")
        ours = FeatureStore(Corpus.read(work / "corpus"), extractor)
        assert len(list(ours.dir.glob("shard-p*.npz"))) >= 2  # written by the array's tasks
        theirs = FeatureStore(Corpus.read(local / "corpus"), extractor)
        np.testing.assert_allclose(ours.load(), theirs.load(), rtol=1e-5, atol=1e-6)
    assert len(list((work / "slurm").rglob("*_log.out"))) >= 4  # one log per job


def _preempt_when(ready: Path, job_name: str, sent: list, timeout_s: float = 300) -> None:
    """Once `ready` exists, preempt the running job as Slurm does (SIGTERM, then submitit's USR2):
    what submitit's own `SlurmJob._interrupt` sends. Slurm holds a requeued job for two minutes
    (EligibleTime = requeue + 121 s, reason BeginTime); the requeue seen, it is made eligible at once,
    as `scontrol update StartTime=now` does on any cluster: the wait is Slurm's, not the behaviour tested."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ready.exists():
        time.sleep(0.2)
    job_ids = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-n", job_name, "-o", "%i"],
                             capture_output=True, text=True).stdout.split()
    for job_id in job_ids[:1]:
        for signal in ("SIGTERM", "USR2"):
            subprocess.run(["scancel", "--signal", signal, job_id], check=True)
        sent.append(job_id)
        while time.monotonic() < deadline:
            state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True).stdout
            if not state.strip():  # gone: finished without a requeue, which the test then reports
                return
            if state.split() == ["PENDING", "BeginTime"]:
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
                return
            time.sleep(0.2)


@pytest.mark.slurm
def test_a_preempted_slurm_training_job_is_requeued_and_resumes_bit_for_bit(slurm_cluster, local_run, tmp_path):
    from sourcetrace.pipeline.backends import SlurmBackend

    recipe, local = local_run
    work = tmp_path / "preempted"
    work.mkdir()
    shutil.copytree(local / "data", work / "data")
    study = Study(recipe, work)
    unit = next(u for u in study.units("train") if u.name == "vits/scheduled")  # the slowest run: ~1 s a step
    checkpoints = work / "runs" / "vits" / "checkpoints"
    sent: list[str] = []
    # Preempt mid-run (20 steps in all) once the step-3 checkpoint exists; its resume point may not,
    # and then the requeued job redoes step 3 and rewrites that checkpoint, which must not change it.
    watcher = threading.Thread(target=_preempt_when, args=(checkpoints / "step-000003", "sourcetrace-train", sent))
    watcher.start()
    lines: list[str] = []
    SlurmBackend(work / "slurm", timeout_min=30).run(study, [unit], lines.append)
    watcher.join()
    assert sent, "the job finished before it could be preempted"
    logs = {p.name: p.read_text() for p in (work / "slurm").rglob("*_log.*")}
    assert any(f"Requeued job {sent[0]}" in text for text in logs.values()), logs.keys()
    assert any("[train] resuming" in text for text in logs.values())  # the requeued job went on from its resume point
    ours = sorted(p.relative_to(checkpoints) for p in checkpoints.rglob("*") if p.is_file())
    reference = local / "runs" / "vits" / "checkpoints"
    theirs = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file() and "zero-init" not in str(p))
    assert ours == theirs
    for rel in ours:
        assert (checkpoints / rel).read_bytes() == (reference / rel).read_bytes(), rel
