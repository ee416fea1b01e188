#!/usr/bin/env bash
# The test command of the README: set up (scripts/setup.sh), then run the whole suite under a
# virtual X display (napari needs OpenGL; Qt's offscreen platform has none).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM=xcb
export PYTHONFAULTHANDLER=1  # a crash while tests run prints every thread's stack
.venv/bin/ruff check src tests benchmarks training scripts
exec xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python -m pytest -q "$@"
