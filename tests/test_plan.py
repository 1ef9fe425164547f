"""`sourcetrace run RECIPE --plan`: states, missing inputs and the fetch command, device-hours and
disk from the cost table (recomputed here from the TOML files), the Slurm submissions, no torch.
The plan of a finished study (everything done) is tested beside the micro study (test_study.py)."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from test_deferred_imports import HEAVY

from sourcetrace.cli import main
from sourcetrace.pipeline.plan import EXIT_BLOCKED, plan_study

ROOT = Path(__file__).resolve().parents[1]
STUDY, MINI = ROOT / "recipes" / "study.toml", ROOT / "recipes" / "mini.toml"
COSTS = tomllib.loads((ROOT / "src" / "sourcetrace" / "pipeline" / "costs.toml").read_text())
ARCHITECTURES = ("fastpitch", "gradtts", "matcha", "vits")


@pytest.fixture(autouse=True)
def _models_dir(tmp_path, monkeypatch):
    """The SSL models are looked for in an empty folder, whatever this machine has."""
    monkeypatch.setenv("SOURCETRACE_MODELS", str(tmp_path / "models"))


def _plan_json(capsys, *argv) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["run", *map(str, argv), "--plan", "--json"])
    return code, json.loads(capsys.readouterr().out)


def _states(plan: dict) -> dict[str, str]:
    return {f"{stage['name']} {unit['name']}": unit["state"] for stage in plan["stages"] for unit in stage["units"]}


def test_the_study_on_an_empty_workdir_is_blocked_and_says_how_to_fetch(tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["run", str(STUDY), "--plan", "--workdir", str(work)]) == EXIT_BLOCKED == 3
    text = capsys.readouterr().out
    stages = text.split("[plan] total:")[0]  # the missing inputs are listed after the total, indented too
    unit_lines = [line for line in stages.splitlines() if line.startswith("    ") and not line.startswith("    slurm")]
    assert len(unit_lines) == 1 + 12 + 1 + 1 + 1  # data, 12 training runs, one synth, features and bench unit
    assert all(" blocked" in line for line in unit_lines), unit_lines
    for stage in ("data", "train", "synth", "features", "bench"):
        line = next(line for line in text.splitlines() if line.startswith(f"[plan] {stage}: "))
        assert "device-hours" in line and "writes" in line, line
    assert f"[plan] get them with: sourcetrace fetch {STUDY} --workdir {work}" in text
    assert f"needs ljspeech ({work / 'data' / 'LJSpeech-1.1'})" in text and "after data, which is blocked" in text
    assert not work.exists()  # a plan writes nothing

    code, plan = _plan_json(capsys, STUDY, "--workdir", work)
    assert code == plan["exit_code"] == 3
    assert set(_states(plan).values()) == {"blocked"}
    assert {m["name"] for m in plan["missing"]} == {  # by the names `sourcetrace fetch NAME` takes
        "ljspeech", "hifitts", *(f"{a}/pretrained" for a in ARCHITECTURES), "vocoder/hifigan-dle",
        "vocoder/hifigan-gradtts", "vocoder/hifigan-gradtts/hifigan-config.json", "vocoder/hifigan-matcha",
        "xls-r-2b", "w2v-bert-2.0"}
    assert plan["fetch_command"] == f"sourcetrace fetch {STUDY} --workdir {work}"


def _put_in_place(work: Path, models: Path) -> None:
    """Empty stand-ins for every input the study names, with the files by which `fetch` knows an
    artefact is complete (a dataset's index, a model folder's config)."""
    _put_ljspeech(work)
    (work / "data" / "hi_fi_tts_v0").mkdir(parents=True, exist_ok=True)
    (work / "data" / "hi_fi_tts_v0" / "9136_manifest_clean_train.json").write_text("")
    (work / "official").mkdir(parents=True, exist_ok=True)
    for name in ("generator_v1", "tts_en_fastpitch_align.nemo", "grad-tts.pt", "matcha_ljspeech.ckpt", "model_file.pth", "config.json",
                 "hifigan_gen_checkpoint_10000_ft.pt", "hifigan.pt", "hifigan-config.json"):
        (work / "official" / name).write_bytes(b"")
    for model in ("xls-r-2b", "w2v-bert-2.0"):
        (models / model).mkdir(parents=True)
        (models / model / "config.json").write_text("{}")


def _put_ljspeech(work: Path) -> None:
    (work / "data" / "LJSpeech-1.1").mkdir(parents=True, exist_ok=True)
    (work / "data" / "LJSpeech-1.1" / "metadata.csv").write_text("")


def test_inputs_in_place_unblock_their_units_and_finished_runs_are_done(tmp_path, capsys):
    work = tmp_path / "work"
    _put_ljspeech(work)  # LJSpeech only: what needs no other input can run
    code, plan = _plan_json(capsys, STUDY, "--workdir", work)
    states = _states(plan)
    assert code == 3 and states["data data"] == "blocked"  # HiFi-TTS is still missing
    train = {u["name"]: u for u in next(s for s in plan["stages"] if s["name"] == "train")["units"]}
    assert (train["gradtts/scheduled"]["state"], train["gradtts/scheduled"]["lacks"]) == ("blocked", [])
    assert train["gradtts/scheduled"]["after"] == "data"  # it has its input, but the run stops at data
    assert [m["name"] for m in train["gradtts/finetuned/9136"]["lacks"]] == ["hifitts", "gradtts/pretrained"]

    _put_in_place(work, tmp_path / "models")
    for step in tomllib.loads((ROOT / "checkpoints" / "schedules.toml").read_text())["study"]["steps"]:
        (work / "runs" / "vits" / "checkpoints" / f"step-{step:06d}").mkdir(parents=True)
    code, plan = _plan_json(capsys, STUDY, "--workdir", work)
    assert (code, plan["missing"], plan["fetch_command"]) == (0, [], None)
    states = _states(plan)
    assert states.pop("train vits/scheduled") == "done"  # every checkpoint of its schedule is there
    assert set(states.values()) == {"pending"}
    capsys.readouterr()
    assert main(["run", str(STUDY), "--plan", "--workdir", str(work)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "[plan] every unit can run"


def test_a_fetched_file_that_changed_since_fetch_pinned_it_blocks_the_plan_and_the_run(tmp_path, capsys):
    work = tmp_path / "work"
    _put_in_place(work, tmp_path / "models")
    placed = work / "official" / "generator_v1"
    placed.write_bytes(b"ab")
    assert main(["fetch", "vocoder/hifigan-matcha", "--workdir", str(work), "--verify", "--quiet"]) == 0  # pins it
    assert _plan_json(capsys, STUDY, "--workdir", work)[0] == 0
    placed.write_bytes(b"abc")  # another length: the plan sees it without hashing
    code, plan = _plan_json(capsys, STUDY, "--workdir", work)
    assert code == 3 and [(m["name"], m["problem"]) for m in plan["missing"]] == [
        ("vocoder/hifigan-matcha", f"{placed} has 3 bytes where fetch.lock says 2")]
    placed.write_bytes(b"ba")  # the same length, other bytes: `run` hashes what changed since, the plan does not
    assert _plan_json(capsys, STUDY, "--workdir", work)[0] == 0
    assert main(["run", str(STUDY), "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert f"error: {work / 'fetch.lock'}: 1 fetched input(s) differ from what fetch pinned: vocoder/hifigan-matcha: " \
           f"{placed} has sha256 " in err and not (work / "runs" / "fastpitch").exists()


def test_the_mini_recipe_makes_its_own_inputs(tmp_path, capsys):
    code, plan = _plan_json(capsys, MINI, "--workdir", tmp_path / "work")
    assert code == 0 and plan["missing"] == []
    assert set(_states(plan).values()) == {"pending"} and len(_states(plan)) == 1 + 16 + 1 + 1 + 1


def _cost(*path):
    entry = COSTS
    for part in path:
        entry = entry[part]
    return entry["value"]


def test_the_numbers_are_the_cost_tables_arithmetic(tmp_path):
    """The study's stages recomputed from costs.toml, the study schedule and the corpus's shape."""
    schedule = tomllib.loads((ROOT / "checkpoints" / "schedules.toml").read_text())["study"]
    plan = plan_study(STUDY, tmp_path / "work")
    stages = {s.name: s.estimate for s in plan.stages}
    step = {a: _cost("train", "h100", "default", a) for a in ARCHITECTURES}
    checkpoint = {a: _cost("checkpoint", "default", a) for a in ARCHITECTURES}
    last, kept = max(schedule["steps"]), len(schedule["steps"]) + len(schedule["zero_init_seeds"]) + 1
    assert stages["train"].device_hours == pytest.approx(
        sum(step[a] * (last + schedule["finetune_steps"]) for a in ARCHITECTURES) / 3600)
    assert stages["train"].disk_bytes == sum(checkpoint[a] * kept for a in ARCHITECTURES)
    prompts, seconds = 100 + 500, _cost("audio", "seconds_per_clip", "ljspeech")  # LJSpeech's val + test
    # per architecture: pretrained + 9 scheduled + 3 zero-init + 1 fine-tune with its own vocoder, and the
    # pretrained + scheduled of each mel architecture with the 2 other HiFi-GANs
    jobs = {"fastpitch": 14 + 20, "gradtts": 14 + 20, "matcha": 14 + 20, "vits": 14}
    clips = sum(jobs.values()) * prompts
    assert clips == 69_600
    assert stages["synth"].device_hours == pytest.approx(
        sum(n * prompts * seconds * _cost("synth", "h100", "default", a) for a, n in jobs.items()) / 3600)
    assert stages["synth"].disk_bytes == pytest.approx(clips * seconds * _cost("audio", "bytes_per_second", "wav"), abs=200)
    models = ("xls-r-2b", "w2v-bert-2.0")
    assert stages["features"].device_hours == pytest.approx(
        sum(clips * seconds / _cost("features", "h100", m) for m in models) / 3600)
    assert stages["features"].disk_bytes == sum(clips * _cost("features", "bytes_per_clip", m) for m in models)
    assert stages["data"].device_hours == stages["bench"].device_hours == 0


def test_the_slurm_plan_is_what_the_backend_would_submit(tmp_path, capsys):
    slurm = tomllib.loads(STUDY.read_text())["slurm"]
    code, plan = _plan_json(capsys, STUDY, "--workdir", tmp_path / "work", "--backend", "slurm")
    assert code == 3
    submissions = {s["name"]: [(j["wave"], j["tasks"], j["parameters"].get("gpus_per_node", 0)) for j in s["submissions"]]
                   for s in plan["stages"]}
    assert submissions == {
        "data": [(0, 1, 0)],
        "train": [(0, 4, 0), (0, 4, slurm["gpus_per_training"]), (1, 4, slurm["gpus_per_training"])],  # zero-init on CPUs
        "synth": [(0, slurm["synth_shards"], slurm["gpus_per_synth"])],
        "features": [(0, slurm["features_shards"], slurm["gpus_per_features"])],
        "bench": [(0, 1, 0)]}
    for stage in plan["stages"]:
        for job in stage["submissions"]:
            p = job["parameters"]
            assert (p["slurm_partition"], p["cpus_per_task"], p["timeout_min"], p["name"]) == (
                slurm["partition"], slurm["cpus_per_task"], slurm["timeout_min"], f"sourcetrace-{stage['name']}")
    capsys.readouterr()
    main(["run", str(STUDY), "--plan", "--workdir", str(tmp_path / "work"), "--backend", "slurm"])
    assert ("slurm wave 0: job array of 64 tasks sourcetrace-synth: partition gpu, 1 GPU(s), 8 CPU(s), 1440 min"
            in capsys.readouterr().out)


def test_the_plan_loads_no_heavy_stack(tmp_path):
    script = ("import sys; from sourcetrace.cli import main; code = main(sys.argv[1:]); "
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY)!r})), code)")
    done = subprocess.run([sys.executable, "-c", script, "run", str(STUDY), "--plan", "--workdir", str(tmp_path),
                           "--backend", "slurm"], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines()[-1] == "[] 3", done.stdout[-2000:] + done.stderr[-2000:]


def test_json_goes_with_plan(tmp_path, capsys):
    assert main(["run", str(MINI), "--json", "--workdir", str(tmp_path)]) == 2
    assert "--json goes with --plan" in capsys.readouterr().err


def test_shipped_vocoder_config_names_do_not_look_like_files():
    """The plan tells a vocoder's config file from a shipped config name without the vocoder class
    (recipe._names_a_config_file): every built-in's shipped names must stay told apart."""
    from sourcetrace.core.plugins import VOCODERS
    from sourcetrace.pipeline.recipe import _names_a_config_file

    for kind in VOCODERS.builtins:
        for name in VOCODERS[kind].shipped_configs:
            assert not _names_a_config_file(name), (kind, name)


def test_study_compute_md_is_generated_from_the_cost_table():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "study_compute.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_stage_run_alone_is_blocked_by_an_earlier_stage_not_done(tmp_path, capsys):
    code, plan = _plan_json(capsys, MINI, "--workdir", tmp_path, "--stages", "synth")
    assert code == 3 and plan["missing"] == []
    assert [(u["state"], u["after"]) for u in plan["stages"][0]["units"]] == [("blocked", "train")]
    capsys.readouterr()
    main(["run", str(MINI), "--workdir", str(tmp_path), "--stages", "synth", "--plan"])
    assert "after train, which is not up to date and not among --stages" in capsys.readouterr().out
