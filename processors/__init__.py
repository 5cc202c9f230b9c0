"""Processors react to events: they decide which new events follow (dependency cascade, and
later dispatch, timeouts, retries, cron). They depend on the domain and on narrow interfaces."""
