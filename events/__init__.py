"""The event backbone: catalog, envelope, streams, outbox, consumers and operations."""
