"""The Dagster wiring: assets from entity specs, the job, the schedule and the resources."""
