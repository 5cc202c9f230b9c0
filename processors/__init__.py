"""Processors react to events and time: the worker loop, the dependency cascade, the cron
scheduler and the learn hooks. They depend on the domain and on narrow interfaces."""
