"""Retention and archive: old stretches of the event log to Parquet segments, verified with
the audit chain, and the aggregates past retention out of the live tables (docs/retention.md)."""
