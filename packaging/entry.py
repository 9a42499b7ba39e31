"""PyInstaller entry point: the same `telemetry-tray` command as the console script."""

import multiprocessing
import sys

from tray_app.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
