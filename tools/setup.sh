#!/usr/bin/env bash
# One setup command for a fresh machine: system packages, a virtual environment in .venv, and
# the light core (attribution + benchmark) with test tools. Safe to rerun.
#   TORCH_SPEC   the torch requirement (default torch==2.13.0: the CPU build on the project's
#                machines, a CUDA build from PyPI on a Linux GPU box; e.g. TORCH_SPEC="torch==2.13.0
#                --index-url https://download.pytorch.org/whl/cu128" for a specific CUDA)
#   PYTHON       the interpreter to build the venv from (default python3, >= 3.10)
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng (required): real speech for the demo and tests.
# chromium (optional): the leaderboard page's browser tests, skipped without it (never in CI).
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# ffmpeg (optional): the libraries torchcodec loads to encode and decode audio for HF `datasets`
# (the corpus release tests), and the program `corpus derive` runs for its codecs; the tests that
# need them skip without them, never in CI.
{ command -v ffmpeg >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep 'libavutil\.so\.' >/dev/null; } || missing+=(ffmpeg)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing ${missing[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif ! command -v espeak-ng >/dev/null 2>&1; then
    echo "[setup] please install espeak-ng (e.g. sudo apt-get install espeak-ng chromium), then rerun" >&2
    exit 1
  else
    echo "[setup] chromium not found: the leaderboard browser tests will be skipped" >&2
  fi
fi

# Disk: the venv with the stacks is 6.7 GB (CUDA torch builds; nvidia and triton alone are 3.3 GB)
# and the tests hold up to 6.7 GB at once (measured: a fresh clone's .ci/run grew the disk by 12.0 GB
# at its peak). Fail now, with the numbers, rather than mid-install.
STACKS=${SOURCETRACE_STACKS:-all}
need_gb=$([ "$STACKS" = none ] && echo 3 || echo 13)
if ! [ -d .venv/lib ]; then
  free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "[setup] $(pwd): ${free_gb} GB free, the venv and the tests need ~${need_gb} GB; free some space and rerun" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# --no-cache-dir: the multi-GB torch and nvidia wheels would otherwise be kept twice on disk.
pip() { .venv/bin/python -m pip --disable-pip-version-check --no-cache-dir -q "$@"; }
pip install --upgrade pip
# torch first, and pinned on every call, so that no dependency range pulls another (multi-GB) build.
# The TTS stacks need torchaudio (coqui-tts imports it), whose last PyPI release (2.11) pins
# torch 2.11 exactly: with the stacks the default is that trio (CUDA builds that also run on a
# CPU-only machine); the light core alone takes the CPU build of torch 2.13 on the project's machines.
if [ "$STACKS" = none ]; then
  TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
else
  TORCH_SPEC=${TORCH_SPEC:-torch==2.11.0 torchaudio==2.11.0 torchcodec==0.11.1}
fi
# shellcheck disable=SC2086
pip install $TORCH_SPEC
pins=$(.venv/bin/python -m pip freeze 2>/dev/null | grep -E '^(torch|torchaudio|torchcodec)==' | tr '\n' ' ')
# strict: a link tree under build/, the one editable mode that maps the namespace package
# sourcetrace.datasets onto datasets/ (a new module needs this script rerun).
# SOURCETRACE_STACKS=none installs the light core only (attribution + benchmark, no TTS stack).
if [ "$STACKS" = none ]; then
  # shellcheck disable=SC2086
  pip install -e ".[test]" $pins --config-settings editable_mode=strict
else
  # the tts extra also brings the vocos and bigvgan vocoder kinds (vocos==0.1.0, bigvgan==2.4.1: their
  # dependencies, encodec, nnaudio, pesq, auraloss, ninja, move none of the pinned stacks)
  # shellcheck disable=SC2086
  pip install -e ".[test,tts]" $pins --no-binary grad-tts --config-settings editable_mode=strict
  # matcha-tts: no declared dependencies (see pyproject's tts extra); its Cython extension is
  # built against the venv's numpy 2 (an isolated build pins numpy 1.24 and then fails).
  pip install --no-deps --no-build-isolation "matcha-tts==0.0.7.2"
  # espnet (ESPnet2's VITS, architecture vits-espnet) with --no-deps: its full requirements cannot be
  # resolved beside the stacks (ci_sdr declares a git URL dependency pip refuses; it pins setuptools<74,
  # importlib-metadata<5, sentencepiece==0.2.0); the modules its VITS imports are in the tts extra.
  # 202511 is the newest release for Python 3.11 (202609 and later need >= 3.12).
  pip install --no-deps "espnet==202511"
fi
# numba's on-disk cache is not safe for processes that first compile a kernel at once (a segfault
# seen in CI): compile the project's kernels here, alone, so parallel jobs (Slurm arrays) only read it.
.venv/bin/python -m sourcetrace.pipeline.numba_cache
.venv/bin/python -c 'import sourcetrace, torch; print(f"[setup] sourcetrace {sourcetrace.__version__}, torch {torch.__version__}, cuda: {torch.cuda.is_available()}")'
