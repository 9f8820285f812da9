"""From source rows to what the receiver expects: canonical IDs, typed JSON records."""
