"""What was delivered and who may deliver now: tracking, row hashes, selection, the entity lock."""
