"""Benchmarks: the product's Users sync against a lean hand-written baseline, on the local PostgreSQL.

Run `make bench` (or `python -m sync_pipeline_tests.benchmarks.run --rows 100000 --rows 1000000`).
No module here is named `test_*`, so pytest never collects them.
"""
