"""What was already delivered and who may deliver now: tracking, selection, the entity lock."""
