"""What an HTTP call answered and how that is read: acknowledgements, Retry-After, idempotency keys."""
