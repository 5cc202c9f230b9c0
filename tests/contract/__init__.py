"""Contract suites: one per port, each test run on the in-memory double and on PostgreSQL."""
