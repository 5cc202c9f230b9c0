"""Everything that touches the outside world: Postgres, executors, HTTP, NATS, the CLI."""
