"""Every HTTP call, push or pull: one transport, one retry loop, auth, a rate limit, and how answers are read."""
