"""NATS: the server to use (``server``), events to JetStream (``egress``), subjects to tasks
(``ingress``), and the bridge a node runs (``bridge``). See docs/nats.md."""
