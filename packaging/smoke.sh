#!/usr/bin/env bash
# Build the one-folder app with PyInstaller (Linux) and check the result works:
# `--version`, `doctor`, and a headless ingest of 100 events into 100 rows using
# the app's own bundled Redis server.
#
#   packaging/smoke.sh            (PYTHON=... to pick the interpreter; default .venv/bin/python)
#   SMOKE_SKIP_BUILD=1 packaging/smoke.sh   re-check an existing build
#
# Exit 0: all good. Exit 3: PyInstaller is not installed. Anything else: a failure.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
BUILD="${BUILD_DIR:-$ROOT/build/pyinstaller}"
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
  echo "smoke: PyInstaller is not installed for $PY (pip install pyinstaller)" >&2
  exit 3
fi
if [ "${SMOKE_SKIP_BUILD:-0}" != 1 ]; then
  start=$(date +%s)
  "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
      --distpath "$BUILD/dist" --workpath "$BUILD/work" "$ROOT/packaging/telemetry-tray.spec"
  echo "smoke: built in $(( $(date +%s) - start )) s: $(du -sh "$BUILD/dist/telemetry-tray" | cut -f1)"
fi
exec "$PY" "$ROOT/packaging/smoke_check.py" "$BUILD/dist/telemetry-tray/telemetry-tray"
