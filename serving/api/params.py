"""Path and query parameters shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

# The largest integer SQLite and PostgreSQL (bigint) hold: a larger id or offset is refused
# as bad input (422) rather than reaching the store, whose driver fails on it (a 500).
STORE_INT_MAX = 2**63 - 1

RowId = Annotated[int, Path(ge=1, le=STORE_INT_MAX, description="a record's number as the service gave it")]
