"""Dagster resources: the three databases and the third-party API client."""
