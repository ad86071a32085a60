"""The event backbone: catalog, envelope, streams, the outbox and relay, the read-model
projection and the consumer runner; the consumers themselves are in ``events.consumers``."""
