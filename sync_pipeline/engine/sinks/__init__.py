"""Where records go: batches POSTed as JSON arrays, or one call per record, created or updated."""
