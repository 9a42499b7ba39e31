"""Usage: the slow path that turns raw traces into exact token and cost
accounting, sessions and timelines (see docs/usage.md).

schema.py (derived tables), accounting.py (raw row -> records), pricing.py
(genai-prices), worker.py (the engine thread on ``cdc:events``), query.py (the
report API), timeline.py (one session), cli.py (commands).
"""
