"""Connectors: what is specific to one third-party system and cannot be expressed as declaration data."""
