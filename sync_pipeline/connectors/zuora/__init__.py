"""Zuora: its customers' credentials and what is known of its API hosts."""
