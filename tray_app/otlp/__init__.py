"""OpenTelemetry (OTLP) parts of the app.

``wire.py``      request bodies <-> the official OTLP protobuf messages
``mapping.py``   log records -> events of the contract (and the rules both share)
``metrics.py``   metric data points -> ``otel_metric`` events
``receiver.py``  the loopback HTTP server thread the engine runs: Claude Code's
                 own OpenTelemetry export, received (docs/operations.md)
``exporter.py``  the opt-in export of aggregated usage metrics to a team's
                 OpenTelemetry Collector (docs/operations.md, "Team setup")

See docs/events.md for the mapping of Claude Code's events.
"""
