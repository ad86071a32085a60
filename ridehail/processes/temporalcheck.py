"""Does this Temporal server fit ridehail? Its namespace must exist and know the ride
search attributes (CONTRACT.md section 4), or the trigger's starts and the workflow's
upserts fail for every ride."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

SEARCH_ATTRIBUTES = ("RideStatus", "RiderId", "DriverId")
KEYWORD = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
# Kept by a namespace ridehail registers itself (dev servers only).
DEV_RETENTION = timedelta(days=3)


class TemporalUnfit(RuntimeError):
    """The Temporal server lacks something ridehail needs; the message says what to do."""


async def namespace_exists(client: Client, namespace: str) -> bool:
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace))
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def missing_search_attributes(client: Client, namespace: str) -> list[str]:
    """The ride search attributes the namespace lacks (or has with another type)."""
    known = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace))
    return [n for n in SEARCH_ATTRIBUTES if known.custom_attributes.get(n) != KEYWORD]


async def register_search_attributes(client: Client, namespace: str) -> None:
    """Add the ride search attributes; those that exist already are fine."""
    try:
        await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace=namespace, search_attributes={n: KEYWORD for n in SEARCH_ATTRIBUTES}))
    except RPCError as e:
        if e.status != RPCStatusCode.ALREADY_EXISTS:
            raise


async def prepare_temporal(client: Client, namespace: str, address: str, *,
                           register_namespace: bool = False, timeout: float = 30) -> None:
    """Make sure the namespace exists (registering it only where asked: on a dev server)
    and has the ride search attributes (added if missing); raise ``TemporalUnfit`` with
    what to do otherwise."""
    where = f"Temporal at {address}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        if not await namespace_exists(client, namespace):
            if not register_namespace:
                raise TemporalUnfit(
                    f"{where} has no namespace {namespace!r}. Create it (`temporal operator "
                    f"namespace create {namespace}`) or set RIDEHAIL_TEMPORAL_NAMESPACE.")
            await client.workflow_service.register_namespace(RegisterNamespaceRequest(
                namespace=namespace,
                workflow_execution_retention_period=Duration(
                    seconds=int(DEV_RETENTION.total_seconds()))))
        while True:
            try:
                missing = await missing_search_attributes(client, namespace)
                if missing:
                    await register_search_attributes(client, namespace)
                    missing = await missing_search_attributes(client, namespace)
            except RPCError as e:
                # a namespace registered a moment ago is not known everywhere at once
                if e.status != RPCStatusCode.NOT_FOUND or loop.time() > deadline:
                    raise
                missing = list(SEARCH_ATTRIBUTES)
            if not missing or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
    except RPCError as e:
        raise TemporalUnfit(
            f"{where} refused to set up namespace {namespace!r} ({e.status.name}: {e}). "
            "Give ridehail a namespace with the search attributes "
            + ", ".join(f"{n} (Keyword)" for n in SEARCH_ATTRIBUTES)) from None
    if missing:
        raise TemporalUnfit(
            f"{where}: namespace {namespace!r} lacks the search attributes "
            + ", ".join(missing) + ". Add them: " + "; ".join(
                f"temporal operator search-attribute create --namespace {namespace} "
                f"--name {n} --type Keyword" for n in missing))
