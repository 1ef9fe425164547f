import os
import tempfile
from pathlib import Path

# numba's on-disk cache is not safe for processes that compile the same cached function at once
# (CI, fresh venv: a worker segfaulted running librosa's pyin kernels while the other worker
# compiled them too). Each test worker keeps its own cache; set before anything imports numba.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(Path(os.environ.get("NUMBA_CACHE_DIR") or tempfile.gettempdir())
                                        / f"sourcetrace-numba-{os.environ['PYTEST_XDIST_WORKER']}")

# One CPU thread for every pool (torch's OpenMP, BLAS) in the test processes and the commands they
# run, in process or as children: two workers fill a 2-core machine, and a command left to its
# default (OMP_NUM_THREADS, else every CPU) oversubscribed it, its OpenMP threads spinning while the
# other worker ran (a 7 s test took 93 s in the full run). Tests of the thread setting set their own.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import ipaddress
import socket
import sys

import numpy as np
import pytest
import torch

from sourcetrace.core.offline import go_offline

torch.set_num_threads(1)
go_offline()

# No test may reach the network (nor may a run: sourcetrace reads local files only). An audit hook
# on every socket connection and name lookup in the test process refuses any host other than this
# machine, and `_offline` fails the test that tried, naming the host and where the attempt came from.
NETWORK_ATTEMPTS: list[str] = []


def _is_local(host) -> bool:
    if host is None or isinstance(host, int):
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("", "localhost", socket.gethostname()) or host.startswith("/"):  # or an AF_UNIX path
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse_network(event: str, args: tuple) -> None:
    if event == "socket.connect":
        address = args[1]
        host = address[0] if isinstance(address, tuple) else None
    elif event == "socket.getaddrinfo":
        host = args[0]
    else:
        return
    if not _is_local(host):
        import sysconfig
        import traceback

        stdlib = sysconfig.get_paths()["stdlib"]
        caller = next((frame for frame in reversed(traceback.extract_stack()[:-1])
                       if not frame.filename.startswith(stdlib) and frame.filename != __file__), None)
        NETWORK_ATTEMPTS.append(f"{event} {host!r} from {caller.filename}:{caller.lineno}" if caller else f"{event} {host!r}")
        raise OSError(f"network access refused in tests: {host!r}")


sys.addaudithook(_refuse_network)


@pytest.fixture(autouse=True)
def _offline():
    """Fail the test that tried to reach another machine."""
    before = len(NETWORK_ATTEMPTS)
    yield
    attempts = NETWORK_ATTEMPTS[before:]
    del NETWORK_ATTEMPTS[before:]
    assert not attempts, "the test tried to reach the network:\n" + "\n".join(attempts)


@pytest.fixture(autouse=True)
def _seeded(tmp_path, monkeypatch):
    """Every test: fixed seeds, one torch thread, and a private cache folder."""
    torch.set_num_threads(1)  # again per test: numba's pool (NeMo's aligner) resets it process-wide
    torch.manual_seed(0)
    np.random.seed(0)
    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-init models of both study architectures, saved as Hugging Face folders."""
    from sourcetrace.attribution.extractors.ssl import named_model_spec, save_random_model

    root = tmp_path_factory.mktemp("models")
    out = {}
    for name in ("tiny-wav2vec2", "tiny-w2v-bert"):
        spec = named_model_spec(name)
        out[name] = save_random_model(spec["config"], spec["preprocessor"], root / name, seed=0)
    return out


@pytest.fixture(scope="session")
def speech_tree(tmp_path_factory):
    """Real speech from espeak-ng: <architecture>/<checkpoint>/<prompt>.wav, 3 voices x 2 variants x 8 prompts."""
    from sourcetrace.core.espeak import sentences, speak

    root = tmp_path_factory.mktemp("speech")
    texts = sentences(8, seed=1)
    for arch in ("en-us", "en-gb-x-rp", "en-gb-scotland"):
        for ckpt, (variant, speed) in {"step-a": ("m1", 160), "step-b": ("f2", 140)}.items():
            for i, text in enumerate(texts):
                speak(text, root / arch / ckpt / f"p{i}.wav", voice=f"{arch}+{variant}", speed=speed)
                (root / arch / ckpt / f"p{i}.txt").write_text(text)
    return root
