"""tracer: record-level lineage for batch campaign pipelines.

The domain core. It imports neither Flask nor rq, so the CLI, the REST API and
the workers all sit on the same functions.
"""

__version__ = "0.1.0"
