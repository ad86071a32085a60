"""RideWorkflow and its saga helper, and HousekeepingWorkflow: deterministic code only, no
I/O."""
