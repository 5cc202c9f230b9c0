"""The ledger's domain: the Task aggregate, its events, the registry and pure rules.

Nothing here performs I/O; every other package depends on this one, never the reverse.
"""
