"""PostgreSQL: the event store, schema creation, projection runners and the embedded server."""
