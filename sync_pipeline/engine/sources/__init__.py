"""Where records come from: keyset pages of a SQL table."""
