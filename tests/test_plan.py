"""`sourcetrace run RECIPE --plan`: states, missing inputs and the fetch command, device-hours and
disk from the cost table (recomputed here from the TOML files), the Slurm submissions, no torch.
The plan of a finished study (everything done) is tested beside the micro study (test_study.py)."""

import copy
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from test_deferred_imports import HEAVY

from sourcetrace.cli import main
from sourcetrace.core.naming import CHECKPOINT_META, CHECKPOINT_WEIGHTS
from sourcetrace.core.offline import extractor_model
from sourcetrace.core.plugins import BUILTIN_TRAITS, GENERATORS, architecture_traits
from sourcetrace.pipeline.costs import CostTable
from sourcetrace.pipeline.plan import EXIT_BLOCKED, plan_study
from sourcetrace.pipeline.recipe import RecipeError, load_study_recipe

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
    stages = text.split("[plan] total remaining:")[0]  # the missing inputs are listed after the total, indented too
    unit_lines = [line for line in stages.splitlines() if line.startswith("    ") and not line.startswith("    slurm")]
    assert len(unit_lines) == 1 + 12 + 1 + 1 + 1  # data, 12 training runs, one synth, features and bench unit
    assert all(" blocked" in line for line in unit_lines), unit_lines
    for stage in ("data", "train", "synth", "features", "bench"):
        line = next(line for line in text.splitlines() if line.startswith(f"[plan] {stage}: "))
        assert "device-hours" in line and "writes" in line, line
    # Grad-TTS's checkpoint has no file URL: by hand or from a lab mirror, so fetch gets "the catalogue's"
    assert f"[plan] get the catalogue's with: sourcetrace fetch {STUDY} --workdir {work}" in text
    assert "gradtts/pretrained" in text and "or fetch it from a lab mirror (--mirror)" in text
    assert "not in the fetch catalogue" not in text  # the catalogue has every input of the study
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


def _put_checkpoints(run: Path, steps) -> list[Path]:
    """Whole checkpoint folders (their files' bytes do not matter to the plan)."""
    folders = [run / "checkpoints" / f"step-{step:06d}" for step in steps]
    for folder in folders:
        folder.mkdir(parents=True)
        for name in (CHECKPOINT_WEIGHTS, CHECKPOINT_META):
            (folder / name).write_bytes(b"")
    return folders


def _stage(plan: dict, name: str) -> dict:
    return next(s for s in plan["stages"] if s["name"] == name)


def test_inputs_in_place_unblock_their_units_and_finished_runs_are_done(tmp_path, capsys):
    work = tmp_path / "work"
    _put_ljspeech(work)  # LJSpeech only: what needs no other input can run
    code, plan = _plan_json(capsys, STUDY, "--workdir", work)
    hours_before = _stage(plan, "train")["estimate"]["device_hours"]
    states = _states(plan)
    assert code == 3 and states["data data"] == "blocked"  # HiFi-TTS is still missing
    train = {u["name"]: u for u in next(s for s in plan["stages"] if s["name"] == "train")["units"]}
    assert (train["gradtts/scheduled"]["state"], train["gradtts/scheduled"]["lacks"]) == ("blocked", [])
    assert train["gradtts/scheduled"]["after"] == "data"  # it has its input, but the run stops at data
    assert [m["name"] for m in train["gradtts/finetuned/9136"]["lacks"]] == ["hifitts", "gradtts/pretrained"]

    _put_in_place(work, tmp_path / "models")
    _put_checkpoints(work / "runs" / "vits", tomllib.loads((ROOT / "checkpoints" / "schedules.toml").read_text())
                     ["study"]["steps"])
    code, plan = _plan_json(capsys, STUDY, "--workdir", work)
    assert (code, plan["missing"], plan["fetch_command"]) == (0, [], None)
    states = _states(plan)
    assert states.pop("train vits/scheduled") == "done"  # every checkpoint of its schedule is there
    assert set(states.values()) == {"pending"}
    train = _stage(plan, "train")
    vits = next(u for u in train["units"] if u["name"] == "vits/scheduled")["estimate"]["device_hours"]
    assert vits > 40 and train["estimate"]["device_hours"] == pytest.approx(hours_before - vits)  # what remains
    capsys.readouterr()
    assert main(["run", str(STUDY), "--plan", "--workdir", str(work)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[-1] == "[plan] every unit can run"
    assert f"[plan] train: 1 done, 11 pending; remaining {hours_before - vits:,.1f} device-hours" in text
    assert "[plan] total remaining: " in text


def test_a_checkpoint_torn_mid_write_is_not_done(tmp_path, capsys):
    """A kill while the last checkpoint's weights were written leaves its folder with the temporary
    file only (training removes it and trains again): the run is not done."""
    work = tmp_path / "work"
    steps = tomllib.loads((ROOT / "checkpoints" / "schedules.toml").read_text())["study"]["steps"]
    last = _put_checkpoints(work / "runs" / "vits", steps)[-1]
    (last / CHECKPOINT_WEIGHTS).rename(last / f".{CHECKPOINT_WEIGHTS}.abcd1234.tmp")
    _, plan = _plan_json(capsys, STUDY, "--workdir", work)
    assert _states(plan)["train vits/scheduled"] == "blocked"  # not done: it would run (after the data stage)
    (last / f".{CHECKPOINT_WEIGHTS}.abcd1234.tmp").rename(last / CHECKPOINT_WEIGHTS)
    (last / CHECKPOINT_META).unlink()
    _, plan = _plan_json(capsys, STUDY, "--workdir", work)
    assert _states(plan)["train vits/scheduled"] == "blocked"
    (last / CHECKPOINT_META).write_text("{}")
    _, plan = _plan_json(capsys, STUDY, "--workdir", work)
    assert _states(plan)["train vits/scheduled"] == "done"


def _recipe_with(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text
    recipe = tmp_path / source.name
    recipe.write_text(text.replace(old, new, 1))
    return recipe


def test_a_split_file_not_in_place_is_a_missing_input_put_by_hand(tmp_path, capsys):
    recipe = _recipe_with(tmp_path, STUDY, 'hifitts = "data/hi_fi_tts_v0"\n',
                          'hifitts = "data/hi_fi_tts_v0"\nsplit = "data/my_split.tsv"\n')
    work = tmp_path / "work"
    code, plan = _plan_json(capsys, recipe, "--workdir", work)
    assert code == 3
    split = next(m for m in plan["missing"] if m["name"] == "[data] split")
    assert (split["path"], split["fetchable"]) == (str(work / "data" / "my_split.tsv"), False)
    assert _stage(plan, "synth")["estimate"]["device_hours"] is None  # the prompt count is in that file
    capsys.readouterr()
    assert main(["run", str(recipe), "--plan", "--workdir", str(work)]) == 3
    text = capsys.readouterr().out
    assert f"    [data] split: {work / 'data' / 'my_split.tsv'}: not in the fetch catalogue, put it in place by hand" in text
    assert f"[plan] get the catalogue's with: sourcetrace fetch {recipe} --workdir {work}" in text
    assert f"    no estimate until in place: [data] split ({work / 'data' / 'my_split.tsv'})" in text

    _put_in_place(work, tmp_path / "models")  # everything the catalogue has: only the split is left
    capsys.readouterr()
    assert main(["run", str(recipe), "--plan", "--workdir", str(work)]) == 3
    text = capsys.readouterr().out
    assert "sourcetrace fetch" not in text and "put it in place by hand" in text
    _, plan = _plan_json(capsys, recipe, "--workdir", work)
    assert plan["fetch_command"] is None and [m["name"] for m in plan["missing"]] == ["[data] split"]


@pytest.mark.parametrize(("old", "new", "message"), [
    ('finetuned = "runs/vits-ft/checkpoints/ft-9136"\n',  # vits given a vocoder of its own
     'finetuned = "runs/vits-ft/checkpoints/ft-9136"\nvocoder = "hifigan-vits"\n'
     '[corpus.vocoders.hifigan-vits]\nkind = "hifigan"\nconfig = "tiny"\nseed = 4\n',
     "vits is end to end (its own decoder makes the waveform): it takes no vocoder"),
    ('finetuned = "runs/vits-ft/checkpoints/ft-9136"\n',  # ... or another architecture's
     'finetuned = "runs/vits-ft/checkpoints/ft-9136"\nvocoder = "hifigan-gradtts"\n',
     "vits is end to end (its own decoder makes the waveform): it takes no vocoder"),
    ('vocoder = "hifigan-matcha"\n', "", "'vocoder' must name one of [corpus.vocoders]"),
    ('[corpus.vocoders.hifigan-fastpitch]', '[corpus.architectures.xtts]\nruns = "runs/xtts"\n'
     'references = ["speaker:Ana Florence"]\n\n[corpus.vocoders.hifigan-fastpitch]', "xtts is inference-only"),
    ('[corpus.vocoders.hifigan-fastpitch]', '[corpus.architectures.xtts]\nroles = ["zero-init"]\nruns = "runs/xtts"\n\n'
     '[corpus.vocoders.hifigan-fastpitch]', "a zero-shot architecture speaks in the voice of reference clips"),
])
def test_the_plan_refuses_what_run_refuses(tmp_path, capsys, old, new, message):
    """The recipe checks of `run` (what the architecture is: end to end, zero-shot, inference-only) are
    made by the plan too, with the same message, without the model classes."""
    recipe = _recipe_with(tmp_path, MINI, old, new)
    with pytest.raises(RecipeError) as refused:
        load_study_recipe(recipe, tmp_path, classes=True)  # what `run` reads the recipe with
    assert message in str(refused.value)
    capsys.readouterr()
    assert main(["run", str(recipe), "--plan", "--workdir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {refused.value}"


def test_every_builtin_class_is_what_its_traits_say():
    """core.plugins.BUILTIN_TRAITS (what the plan checks a recipe with) agrees with each class."""
    assert set(BUILTIN_TRAITS) == set(GENERATORS.builtins)
    for name in GENERATORS.builtins:
        assert GENERATORS[name].traits() == BUILTIN_TRAITS[name] == architecture_traits(name), name


def test_one_rule_gives_the_model_folder_of_an_extractor_spec(tmp_path):
    assert extractor_model("lfcc") is None and extractor_model("mfcc") is None
    own = extractor_model("ssl:/labs/models/my-hubert@3..5:max", tmp_path)
    assert own is not None and (own.folder, own.named, own.name) == (Path("/labs/models/my-hubert"), False,
                                                                       "/labs/models/my-hubert")
    named = extractor_model("xls-r-2b@10", tmp_path)
    assert named is not None and (named.folder, named.named, named.name) == (tmp_path / "xls-r-2b", True, "xls-r-2b")


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

    # cpu_partition: the jobs asking no GPU go there, the others stay on `partition`.
    split = tmp_path / "split.toml"
    split.write_text(STUDY.read_text().replace('partition = "gpu"', 'partition = "gpu"\ncpu_partition = "cpu"', 1))
    _, plan = _plan_json(capsys, split, "--workdir", tmp_path / "work", "--backend", "slurm")
    partitions = {(s["name"], j["parameters"].get("gpus_per_node", 0), j["parameters"]["slurm_partition"])
                  for s in plan["stages"] for j in s["submissions"]}
    assert partitions == {("data", 0, "cpu"), ("train", 0, "cpu"), ("train", 1, "gpu"), ("synth", 1, "gpu"),
                          ("features", 1, "gpu"), ("bench", 0, "cpu")}


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


def test_study_compute_md_prints_no_estimate_where_the_table_lacks_a_row(tmp_path):
    spec = importlib.util.spec_from_file_location("study_compute", ROOT / "tools" / "study_compute.py")
    assert spec is not None and spec.loader is not None
    study_compute = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study_compute)
    lacking = copy.deepcopy(COSTS)
    del lacking["checkpoint"]["default"]["vits"]
    rows = study_compute._stage_rows(plan_study(STUDY, tmp_path / "work", table=CostTable(lacking)))
    train = next(row for row in rows if row.startswith("| train |"))
    assert train.split(" | ")[2:4] == ["76.5", "no estimate"], train  # the hours are known, the disk is not
    assert "| &nbsp; vits/scheduled | | 43.1 | no estimate | |" in rows
    assert rows[-1] == "| **total** | | **88.8** | **no estimate** | |"


def test_a_stage_run_alone_is_blocked_by_an_earlier_stage_not_done(tmp_path, capsys):
    code, plan = _plan_json(capsys, MINI, "--workdir", tmp_path, "--stages", "synth")
    assert code == 3 and plan["missing"] == []
    assert [(u["state"], u["after"]) for u in plan["stages"][0]["units"]] == [("blocked", "train")]
    capsys.readouterr()
    main(["run", str(MINI), "--workdir", str(tmp_path), "--stages", "synth", "--plan"])
    assert "after train, which is not up to date and not among --stages" in capsys.readouterr().out
