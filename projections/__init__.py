"""Read models folded from the event log: each projection owns its tables and an ``apply``."""
