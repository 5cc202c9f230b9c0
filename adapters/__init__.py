"""Everything that touches the outside world: Postgres, executors, the CLI (and later HTTP, NATS)."""
