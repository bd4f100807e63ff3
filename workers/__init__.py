"""rq workers: thin adapters that look up ids, call tracer, and record status."""
