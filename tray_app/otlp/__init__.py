"""OpenTelemetry (OTLP) parts of the app."""
