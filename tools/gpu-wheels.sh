#!/usr/bin/env bash
# Wheels for perf/gpu_check.py on the device's GPU image (no network there), in one folder
# the device tool carries (about 5 MB): sourcetrace itself, tools/gpu-wheels.txt (downloaded from
# PyPI for the image's Python and glibc >= 2.28), and grad-tts: a wheel where a local interpreter
# of that version exists, else its source, built there (its extension is compiled). Usage:
#   bash tools/gpu-wheels.sh [OUT_DIR [PYTHON_VERSION]]       # default: .whl 3.12 (.whl/ is git-ignored)
# How to install them there: perf/gpu_check.py's header.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.whl}
version=${2:-3.12}
py=.venv/bin/python
mkdir -p "$out"
"$py" tools/gpu_image.py wheel "$out"
grep -v '^#' tools/gpu-wheels.txt | xargs "$py" -m pip download -q --no-deps --only-binary=:all: \
  --python-version "$version" --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$out"
builder=""
if [ "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$version" ]; then
  builder=$py
elif command -v "python$version" >/dev/null 2>&1 && "python$version" -m pip --version >/dev/null 2>&1; then
  builder=python$version
fi
if [ -n "$builder" ]; then
  "$builder" -m pip wheel -q --no-deps --no-binary grad-tts grad-tts==0.0.4 -w "$out"
else  # built there, with the image's Cython, numpy and compiler (see perf/gpu_check.py's header)
  "$py" -m pip download -q --no-deps --no-build-isolation --no-binary grad-tts grad-tts==0.0.4 -d "$out"
fi
ls "$out"
