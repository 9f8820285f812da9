"""The sync engine: plain Python over SQLAlchemy engines and an API client, no Dagster imports."""
