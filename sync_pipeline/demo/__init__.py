"""The embedded default: SQLite databases with generated data and a local receiving API."""
