"""Offline at run time: no stage reaches the network (tests/conftest.py refuses it for every test in
this process and fails the test that tries); these tests check that guard itself and the two places
that needed one: the libraries' offline switches and g2p_en's import-time NLTK downloads."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from conftest import NETWORK_ATTEMPTS

from sourcetrace.core.offline import OFFLINE_SWITCHES, go_offline


def test_the_tests_refuse_another_host_and_name_who_asked():
    with pytest.raises(OSError, match="network access refused"):
        socket.create_connection(("example.org", 80), timeout=1)
    assert NETWORK_ATTEMPTS and "'example.org'" in NETWORK_ATTEMPTS[-1] and "test_offline.py" in NETWORK_ATTEMPTS[-1]
    NETWORK_ATTEMPTS.clear()  # seen: this test's own attempt must not fail it


def test_the_tests_allow_this_machine():
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()[:2], timeout=5):
        pass


def test_go_offline_sets_every_switch_and_keeps_the_users(monkeypatch):
    for name in OFFLINE_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a user who wants the hub keeps it
    go_offline()
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert all(os.environ[name] == "1" for name in OFFLINE_SWITCHES if name != "HF_HUB_OFFLINE")


PROBE = """
import sys
attempts = []
def hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo"):
        attempts.append(event)
        raise OSError("offline")
sys.addaudithook(hook)
import torch
torch.set_num_threads(1)
from sourcetrace.generators import build_generator
generator = build_generator("vits-espnet", "tiny", seed=0)
ids = generator.text_to_ids("Printing, in the only sense with which we are at present concerned.")
print(len(ids) > 0, len(attempts))
"""


@pytest.mark.tts
def test_espnet_vits_reads_text_without_reaching_the_network():
    # a fresh process: g2p_en, imported by ESPnet's tokenizer, downloads NLTK data at its first import
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["True", "0"], done.stdout + done.stderr[-2000:]
    assert "nltk_data" not in done.stderr
