"""Where records go: batches POSTed to an HTTP API, acknowledged, retried, split on refusal."""
