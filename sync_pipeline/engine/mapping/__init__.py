"""From source rows to the receiver's records: canonical IDs, typed JSON records, field maps."""
