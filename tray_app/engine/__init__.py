"""Layer 2: the ingest engine (no UI, no signals)."""
