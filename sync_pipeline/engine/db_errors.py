"""Database errors as one safe line for logs and metadata."""

from __future__ import annotations

import sqlalchemy as sa


def describe_db_error(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's first line, without the SQL text or parameters SQLAlchemy appends."""
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line}"[:500]
