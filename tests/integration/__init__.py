"""Tests against real services: Temporal (a dev server or the time-skipping test server),
NATS and the databases, with the stack running in-process."""
