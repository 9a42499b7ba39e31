"""Support and distribution: diagnostics bundle, start at login, dead-letter
and database commands. Each module is one moving part:

- ``redact.py``      what may leave the machine, and how it is scrubbed
- ``diagnostics.py`` the shareable zip bundle
- ``dlq.py``         inspecting, retrying and purging dead letters
- ``dbstats.py``     read-only statistics of telemetry.db
- ``autostart.py``   start at login on Linux, macOS and Windows
- ``cli.py``         the commands: diagnostics, autostart, dlq, db
"""
