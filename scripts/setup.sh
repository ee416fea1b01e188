#!/usr/bin/env bash
# Set up a fresh machine for napari-la-dinov2: system libraries for Qt/OpenGL under a virtual
# display (Debian/Ubuntu, when run as root), a virtual environment in .venv, PyTorch (the CPU
# build unless a torch is already there: set TORCH_SPEC to choose), then the project with its
# test and GUI extras. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

APT_PACKAGES="xvfb xauth libgl1 libgl1-mesa-dri libegl1 libxkbcommon0 libxkbcommon-x11-0
 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-xfixes0 libdbus-1-3 libfontconfig1
 libglib2.0-0"
if ! command -v xvfb-run >/dev/null 2>&1 || ! ldconfig -p | grep -q libxcb-cursor; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages for Qt and a virtual display" >&2
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null
  else
    echo "setup: the GUI tests need: $APT_PACKAGES (install them as root); going on" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing $TORCH_SPEC" >&2
  "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
fi
stamp="$VENV/.napari-la-dinov2-installed"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing napari-la-dinov2 with its test and GUI extras" >&2
  "$VENV/bin/python" -m pip install -q -e ".[test,gui]"
  echo "$want" > "$stamp"
fi
