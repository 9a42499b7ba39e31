"""The SQL views docs/operations.md offers for datasette / sqlite-utils run
against the schema the app creates (raw tables and derived usage tables)."""

from __future__ import annotations

import re
from contextlib import closing
from pathlib import Path

from conftest import ROOT

from tray_app.engine import schema
from tray_app.usage import schema as usage_schema


def test_the_documented_views_match_the_schema(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    views = re.findall(r'sqlite-utils create-view \S+ (\w+) "\n(.*?)"', text, re.S)
    assert {name for name, _ in views} == {"usage_daily", "session_list", "events"}
    with closing(schema.open_database(tmp_path / "telemetry.db")) as conn:
        usage_schema.ensure(conn)
        for name, select in views:
            conn.execute(f"CREATE VIEW {name} AS {select}")
            conn.execute(f"SELECT * FROM {name}").fetchall()  # every column it names exists
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='view'").fetchone()[0] == 3
