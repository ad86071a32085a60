"""The consumers: the workflow trigger, the read-model projectors and the notifier."""
