"""Everything that touches the outside world: Postgres, executors, the CLI (later HTTP, NATS)."""
