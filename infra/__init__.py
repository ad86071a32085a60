"""What every process stands on: settings from ``RIDEHAIL_*`` (``config``), tracing
(``telemetry``), log lines with the ride and trace ids (``logs``), one NATS and one
Temporal connection per process (``connections``) and bearer tokens (``tokens``)."""
