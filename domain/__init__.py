"""Pure ride rules: statuses, pricing, payment policy, matching, notifications, geography
and money. No I/O: nothing here imports a database, NATS, Temporal client or web framework."""
