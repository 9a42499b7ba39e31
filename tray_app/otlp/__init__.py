"""The local OTLP/HTTP receiver for Claude Code's own OpenTelemetry export.

``wire.py``      request bodies <-> the official OTLP protobuf messages
``mapping.py``   log records -> events of the contract (and the rules both share)
``metrics.py``   metric data points -> ``otel_metric`` events
``receiver.py``  the loopback HTTP server thread the engine runs

See docs/operations.md (setup) and docs/events.md (the mapping).
"""
