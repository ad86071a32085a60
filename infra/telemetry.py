"""Tracing for a ridehail process, configured by the standard OpenTelemetry variables.

``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns it on;
``OTEL_EXPORTER_OTLP_PROTOCOL`` picks ``http/protobuf`` (the default) or ``grpc``;
``OTEL_SERVICE_NAME`` overrides the process's own name (``ridehail-api``,
``ridehail-worker`` …); ``OTEL_TRACES_SAMPLER`` and the exporter's other variables are
read by the SDK itself; ``OTEL_SDK_DISABLED=true`` turns it off. Without an endpoint no
tracer provider is installed: the OpenTelemetry API stays a no-op, and the code that
carries trace context across NATS and Temporal checks ``tracing_on`` before doing any
work of its own.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

SERVICE_PREFIX = "ridehail-"


class OtelSettings(BaseSettings):
    """The standard OpenTelemetry variables that decide whether a process traces at all;
    the SDK reads the rest itself (sampler, headers, timeouts, resource attributes)."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    sdk_disabled: bool = False
    exporter_otlp_endpoint: str | None = None
    exporter_otlp_traces_endpoint: str | None = None
    exporter_otlp_protocol: str = "http/protobuf"
    exporter_otlp_traces_protocol: str | None = None
    service_name: str | None = None

    @property
    def tracing(self) -> bool:
        """On only with somewhere to send spans, and not switched off."""
        return not self.sdk_disabled and bool(
            self.exporter_otlp_traces_endpoint or self.exporter_otlp_endpoint)

    @property
    def protocol(self) -> str:
        return self.exporter_otlp_traces_protocol or self.exporter_otlp_protocol


def tracing_on() -> bool:
    """Whether this process has a real tracer provider (set here, or by a test)."""
    return not isinstance(trace.get_tracer_provider(),
                          trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def setup_tracing(component: str, otel: OtelSettings | None = None) -> bool:
    """Install the process's tracer provider, exporting over OTLP in batches, when the
    standard variables ask for it; the service is ``ridehail-<component>`` unless
    ``OTEL_SERVICE_NAME`` names it. Returns whether tracing is on."""
    otel = otel or OtelSettings()
    if not otel.tracing or tracing_on():
        return tracing_on()
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    exporter: SpanExporter
    if otel.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as OTLPGrpcExporter,
        )

        exporter = OTLPGrpcExporter()
    elif otel.protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as OTLPHttpExporter,
        )

        exporter = OTLPHttpExporter()
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={otel.protocol!r}: ridehail exports "
                         "traces over http/protobuf or grpc")
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours is the
    # default only
    attributes = {} if otel.service_name else {SERVICE_NAME: SERVICE_PREFIX + component}
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler: from env
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing on: service %s, OTLP over %s",
             otel.service_name or SERVICE_PREFIX + component, otel.protocol)
    return True


def shutdown_tracing() -> None:
    """Send the spans still buffered (call as the process stops)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), if a span is recording."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
