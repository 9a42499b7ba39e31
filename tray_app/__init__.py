"""Telemetry Tray: local telemetry for AI coding assistants."""

__version__ = "0.1.0"
APP_NAME = "telemetry-tray"
