"""RideWorkflow and its saga helper: deterministic code only, no I/O."""
