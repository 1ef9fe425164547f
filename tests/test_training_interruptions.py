"""Training killed after every write of a checkpoint step and of a resume-only step, by SIGINT and
by SIGKILL, for every architecture (tiny configs; VITS, the expensive one, at fewer points): the
resumed run's checkpoints equal an uninterrupted run's, byte for byte. A resume point whose files do not belong together is refused
with a message and the previous one is used."""

import json
import multiprocessing
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("grad_tts", reason="the Grad-TTS stack is installed by tools/setup.sh")
pytest.importorskip("matcha", reason="the Matcha-TTS stack is installed by tools/setup.sh")
pytest.importorskip("nemo", reason="the NeMo stack is installed by tools/setup.sh")
pytest.importorskip("TTS", reason="the Coqui TTS stack is installed by tools/setup.sh")

from sourcetrace.core.fileio import sha256_file
from sourcetrace.core.plugins import STUDY_ARCHITECTURES
from sourcetrace.datasets.espeak_datasets import make_ljspeech_like
from sourcetrace.datasets.ljspeech import LJSpeech
from sourcetrace.generators import build_generator, training
from sourcetrace.generators.data import TrainingData

pytestmark = [pytest.mark.slow, pytest.mark.tts]

ARCHS = sorted(STUDY_ARCHITECTURES)  # the kit's resume check covers the others (tests/test_vits_espnet.py)
STEPS = [2, 3, 5]   # checkpoints; every case starts from the step-2 resume point and is killed at step 3 or 4
RESUME_EVERY = 4    # step 4: a resume point without a checkpoint
WRITES = ["trained", "checkpoint/model.safetensors", "checkpoint/generator.json", "resume/model.safetensors",
          "resume/generator.json", "resume/trainer.pt", "resume/manifest.json", "resume/published", "resume/pruned"]
POINTS = [(write, 3) for write in WRITES] + [(write, 4) for write in ("trained", "resume/trainer.pt",
                                                                      "resume/published")]
# (arch, signal, write, step): SIGKILL after every write; SIGINT (which unwinds through the writers)
# before, inside and after the window of issue 15 (weights written, trainer state not). Tiny VITS, the
# expensive one (22 M parameters: ~15 s a case on 2 CPUs), at step 3 only.
SIGINT_POINTS = [("trained", 3), ("resume/model.safetensors", 3), ("resume/published", 3)]
CASES = [(arch, "SIGKILL", write, step) for arch in ARCHS for write, step in POINTS if arch != "vits" or step == 3]
CASES += [(arch, "SIGINT", write, step) for arch in ARCHS for write, step in SIGINT_POINTS]


def _run(arch: str, root: Path, run_dir: Path, **options):
    """The training of every case (a fresh generator each time), in this process or a child: one
    thread in both (a forkserver child would otherwise take every CPU, whatever OMP_NUM_THREADS)."""
    torch.set_num_threads(1)
    generator = build_generator(arch, "tiny", seed=1)
    data = TrainingData(generator, LJSpeech(root / "lj").items("train"), root / "features")
    return training.train(generator, data, run_dir, STEPS, batch_size=2, seed=0, resume_every=RESUME_EVERY,
                          tensorboard=False, **{"log": lambda _: None, **options})


def _killed_run(arch: str, root: Path, run_dir: Path, signum: int, write: str, step: int) -> None:
    """A child's training, which sends itself `signum` right after `write` at `step`. SIGINT gets
    Python's default handler, as in a terminal: a pytest-xdist worker ignores SIGINT (its controller
    takes Ctrl-C) and its children inherit that."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _run(arch, root, run_dir,
             after_write=lambda what, at: (what, at) == (write, step) and os.kill(os.getpid(), signum))
    except KeyboardInterrupt:
        sys.exit(130)


@pytest.fixture(scope="module")
def children():
    """Children forked from a server process that imported the TTS stacks but never ran them: a
    process that has run NeMo's alignment search (numba's OpenMP pool) cannot fork a child that
    runs it again (numba aborts the child)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "nemo.collections.tts.models", "TTS.tts.models.vits", "grad_tts",
                                    "matcha.models.matcha_tts", __name__])
    return context


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Per architecture, built on first use and shared by its cases: the uninterrupted run, and a
    run stopped after step 2, whose resume point every interrupted case starts from."""
    root = tmp_path_factory.mktemp("interrupted")
    make_ljspeech_like(root / "lj", n_train=4, n_val=1, n_test=1, seed=0)
    built: set[str] = set()

    def get(arch: str) -> Path:
        if arch not in built:
            _run(arch, root, root / arch / "whole")
            _run(arch, root, root / arch / "at-2", stop_after=2)
            built.add(arch)
        return root

    return get


def _interrupted(children, arch: str, root: Path, run_dir: Path, signum: int, write: str, step: int) -> int:
    """Train in a child killed by `signum` right after `write` at `step`; its exit code (130 for the
    KeyboardInterrupt of SIGINT, -9 for SIGKILL)."""
    child = children.Process(target=_killed_run, args=(arch, root, run_dir, signum, write, step))
    child.start()
    child.join(300)
    if child.exitcode is None:
        child.kill()
        child.join()
        pytest.fail(f"the training child did not finish in 300 s (to be killed at {write} of step {step})")
    return child.exitcode


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("arch,how,write,step", CASES, ids=[f"{a}-{h}-{w}@{s}" for a, h, w, s in CASES])
def test_training_killed_after_any_write_resumes_bit_for_bit(arch, how, write, step, reference, children,
                                                           tmp_path):
    root = reference(arch)
    run_dir = tmp_path / "run"
    shutil.copytree(root / arch / "at-2", run_dir)
    signum = getattr(signal, how)
    assert _interrupted(children, arch, root, run_dir, signum, write, step) == (130 if how == "SIGINT" else -signum)
    log: list[str] = []
    report = _run(arch, root, run_dir, log=log.append)
    published = write in ("resume/published", "resume/pruned")
    assert report.resumed_from == (step if published else step - 1), log
    assert not any("refused" in line for line in log), log  # an interruption never leaves a bad resume point
    assert _files(run_dir / "checkpoints") == _files(root / arch / "whole" / "checkpoints")
    assert sorted(p.name for p in (run_dir / "resume").iterdir()) == ["step-000004", "step-000005"]  # newest two
    shutil.rmtree(run_dir)  # VITS runs are large


def test_a_resume_point_whose_files_disagree_is_refused_and_the_previous_one_used(reference, children, tmp_path):
    """The inconsistency of issue 15 (the weights of step 3, the trainer state of step 2), caught
    by the hashes, and again when the manifest was rewritten to match; then files without a manifest."""
    root = reference("gradtts")
    whole = root / "gradtts" / "whole"
    run_dir = tmp_path / "run"
    shutil.copytree(root / "gradtts" / "at-2", run_dir)
    assert _interrupted(children, "gradtts", root, run_dir, signal.SIGKILL, "resume/published", 3) == -signal.SIGKILL
    resume = run_dir / "resume"
    assert sorted(p.name for p in resume.iterdir()) == ["step-000002", "step-000003"]  # published, not yet pruned
    assert torch.load(resume / "step-000003" / "trainer.pt", weights_only=True)["step"] == 3  # no pickled objects
    shutil.copy(resume / "step-000002" / "trainer.pt", resume / "step-000003" / "trainer.pt")
    intact = tmp_path / "step-000002"
    shutil.copytree(resume / "step-000002", intact)
    for rewrite_manifest, message in ((False, "changed since the manifest was written"),
                                      (True, "weights of step 3, trainer state of step 2")):
        if rewrite_manifest:
            manifest = json.loads((resume / "step-000003" / "manifest.json").read_text())
            manifest["sha256"]["trainer.pt"] = sha256_file(resume / "step-000003" / "trainer.pt")
            (resume / "step-000003" / "manifest.json").write_text(json.dumps(manifest))
        state = _files(resume)
        log: list[str] = []
        report = _run("gradtts", root, run_dir, log=log.append, stop_after=3)
        assert report.resumed_from == 2
        assert any("resume point refused" in line and message in line and "using step-000002" in line
                   for line in log), log
        assert _files(run_dir / "checkpoints" / "step-000003") == _files(whole / "checkpoints" / "step-000003")
        # stop_after=3 published a good step-3 resume point; put the bad one back for the next variant
        shutil.rmtree(resume)
        for name, data in state.items():
            (resume / name).parent.mkdir(parents=True, exist_ok=True)
            (resume / name).write_bytes(data)
    # Files of the layout before resume points were published whole: refused, and the run starts over.
    shutil.rmtree(resume)
    resume.mkdir()
    for name in ("model.safetensors", "generator.json", "trainer.pt"):
        shutil.copy(intact / name, resume / name)
    log = []
    report = _run("gradtts", root, run_dir, log=log.append)
    assert report.resumed_from == 0 and any("without a manifest refused" in line for line in log), log
    assert _files(run_dir / "checkpoints") == _files(whole / "checkpoints")
    assert sorted(p.name for p in resume.iterdir())[-1] == "step-000005" and len(list(resume.iterdir())) == 2


def test_a_damaged_resume_point_falls_back_to_the_one_before_after_pruning(reference, tmp_path):
    """Pruning keeps the previous resume point, so damage to the newest costs one step, not the run."""
    root = reference("gradtts")
    run_dir = tmp_path / "run"
    shutil.copytree(root / "gradtts" / "at-2", run_dir)
    _run("gradtts", root, run_dir, stop_after=3)  # publishes step 3 and prunes
    resume = run_dir / "resume"
    assert sorted(p.name for p in resume.iterdir()) == ["step-000002", "step-000003"]
    weights = resume / "step-000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])  # truncated after it was published
    log: list[str] = []
    report = _run("gradtts", root, run_dir, log=log.append)
    assert report.resumed_from == 2 and any("resume point refused" in line for line in log), log
    assert _files(run_dir / "checkpoints") == _files(root / "gradtts" / "whole" / "checkpoints")


def test_a_checkpoint_write_cut_by_a_kill_leaves_no_temporary_file_after_the_next_start(reference, tmp_path, capsys):
    """SIGKILL inside a checkpoint file's write leaves atomic_path's temporary file beside it: the next
    start removes those (only those) and `checkpoints verify` on the run folder is not misled by them."""
    from sourcetrace.cli import main
    from sourcetrace.core.naming import step_name

    root = reference("gradtts")
    run_dir = tmp_path / "run"
    shutil.copytree(root / "gradtts" / "at-2", run_dir)
    torn = [run_dir / "checkpoints" / step_name(2) / ".model.safetensors.k9x2m1qa.tmp",  # a finished checkpoint's
            run_dir / "checkpoints" / step_name(3) / ".model.safetensors.0c_7hyzw.tmp"]  # killed in its first write
    for path in torn:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a safetensors file")
    notes = run_dir / "checkpoints" / step_name(2) / "notes.tmp"
    notes.write_text("not ours")
    assert main(["checkpoints", "verify", str(run_dir)]) == 0
    assert "problem" not in capsys.readouterr().out
    _run("gradtts", root, run_dir)
    assert not any(path.exists() for path in torn) and notes.read_text() == "not ours"
    notes.unlink()
    assert _files(run_dir / "checkpoints") == _files(root / "gradtts" / "whole" / "checkpoints")
