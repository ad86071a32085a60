"""The NATS fit-check against real servers: one without JetStream, Debian's 2.9 (where
installed), a RIDES stream left without its partitioning transform, durables with the
wrong configuration, streams from before the age limit, a NOTIFICATIONS stream keeping
longer than its setting. Each is refused with what to do, or migrated, and rides run
afterwards; an event leaves RIDES once its window is over."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from events.catalog import Point, RideRequested
from events.envelope import new_event
from events.fitcheck import NatsUnfit, fit_check, parse_version
from events.migrate_streams import migrate
from events.stream_age import keeping_settings
from events.streams import stream_configs
from events.topology import RIDE_PROJECTOR, WORKFLOW_TRIGGER
from infra.config import Settings
from infra.connections import connect_temporal
from ridehail.processes.components import runtime
from ridehail.processes.devservers import DevStack, shorten_own_streams
from ridehail.processes.devstack import ridehail_command
from ridehail.processes.serverprocess import DevStackError, ServerProcess, binary
from ridehail.processes.temporalcheck import missing_search_attributes, namespace_exists
from tests.support.servers import free_port
from tests.support.stack import Stack, eventually, running_stack

DEBIAN_NATS = Path("/usr/sbin/nats-server")


def _server(tmp_path: Path, name: str, exe: str, *, jetstream: bool = True) -> ServerProcess:
    port = free_port()
    argv = [exe, "-a", "127.0.0.1", "-p", str(port)]
    if jetstream:
        argv += ["-js", "-sd", str(tmp_path / name)]
    return ServerProcess(name, argv, tmp_path / f"{name}.log", "127.0.0.1", port)


def _debian_nats_version() -> str | None:
    if not DEBIAN_NATS.exists():
        return None
    out = subprocess.run([str(DEBIAN_NATS), "--version"], capture_output=True, text=True)
    return out.stdout.split()[-1] if out.stdout.strip() else None


@pytest.fixture
async def nats_29(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """Debian's nats-server (2.9 on Debian 12), on a free port of this test's own."""
    version = await asyncio.to_thread(_debian_nats_version)
    if version is None:
        pytest.skip("Debian's nats-server is not installed (apt-get install nats-server)")
    if parse_version(version) >= (2, 10, 0):
        pytest.skip(f"Debian's nats-server is {version}, not older than 2.10")
    server = _server(tmp_path, "nats-29", str(DEBIAN_NATS))
    server.start()
    try:
        await server.wait_ready()
        yield server
    finally:
        server.stop()


async def _connect(url: str) -> NATS:
    return await nats.connect(url, allow_reconnect=False)


async def test_a_server_without_jetstream_is_refused(tmp_path: Path, settings: Settings) -> None:
    server = _server(tmp_path, "no-js", binary("nats-server"), jetstream=False)
    server.start()
    try:
        await server.wait_ready()
        url = f"nats://127.0.0.1:{server.port}"
        with pytest.raises(NatsUnfit) as refused:
            async with runtime(settings.model_copy(update={"nats_url": url}), "test",
                               temporal=False):
                pass
        message = str(refused.value)
        assert f"NATS at {url} does not fit ridehail" in message
        assert "server: JetStream is not available" in message
        assert "nats-server -js" in message  # how to fix it

        check = await asyncio.to_thread(
            subprocess.run, ridehail_command("streams", "check", "--json"),
            env={**os.environ, "RIDEHAIL_NATS_URL": url}, capture_output=True, text=True,
            timeout=60)
        assert check.returncode == 1, check.stderr
        report = json.loads(check.stdout)
        assert report["jetstream"] is False and report["ok"] is False
        assert [f["field"] for f in report["findings"]] == ["JetStream"]
    finally:
        server.stop()


async def test_nats_29_is_refused_naming_the_feature_it_lacks(nats_29: ServerProcess,
                                                              settings: Settings) -> None:
    url = f"nats://127.0.0.1:{nats_29.port}"
    nc = await _connect(url)
    try:
        report = await fit_check(nc, nc.jetstream(), repair=True)
    finally:
        await nc.close()
    assert report.version is not None and report.version.startswith("2.9.")
    assert not report.ok and report.jetstream
    (finding,) = report.findings
    assert (finding.target, finding.field) == ("server", "version")
    assert "2.10.0 or newer" in finding.needed and "subject transforms" in finding.needed
    assert report.done == []  # nothing was created on a server that cannot hold it

    # an address the user chose is never swapped for another
    chosen = settings.model_copy(update={"nats_url": url})
    stack = DevStack(chosen, say=lambda line: None, explicit={"nats_url"})
    with pytest.raises(DevStackError, match=r"version is 2\.9\.\d+; needed 2\.10\.0"):
        await stack.start_servers()
    assert stack.started == []


async def test_dev_starts_its_own_nats_when_the_default_one_is_2_9(
        nats_29: ServerProcess, settings: Settings, tmp_path: Path) -> None:
    """As on a machine whose own nats-server 2.9 holds the default address: the address
    was not chosen by the user, so ridehail dev starts a server of its own elsewhere."""
    url = f"nats://127.0.0.1:{nats_29.port}"
    said: list[str] = []
    dev = settings.model_copy(update={"nats_url": url, "data_dir": tmp_path / "dev"})
    stack = DevStack(dev, say=said.append, explicit=set())
    await stack.start_servers()
    try:
        assert [s.name for s in stack.started] == ["nats-server"]  # Temporal was reused
        assert stack.settings.nats_url != url
        assert any("does not fit ridehail" in line and "version is 2.9" in line
                   and "starting one of its own" in line for line in said), said
        assert any("own: the one on" in note for note in stack.notes)
        nc = await _connect(stack.settings.nats_url)
        try:
            assert (await fit_check(nc, nc.jetstream())).ok
        finally:
            await nc.close()
    finally:
        stack.stop_servers()


def _stranded_request(rider: str) -> tuple[str, bytes, str]:
    ride_id = uuid.uuid4().hex
    event = new_event(
        "ride.requested",
        RideRequested(ride_id=ride_id, rider_id=rider, pickup=Point(lat=40.75, lng=-73.99),
                      dropoff=Point(lat=40.76, lng=-73.97)),
        source="ridehail-api", subject=ride_id)
    return ride_id, event.to_json(), event.nats_subject


async def _complete_with_driver(stack: Stack, ride_id: str, rider: str, driver: str) -> None:
    await stack.call("PUT", "/v1/drivers/me", "driver", driver, want=200, json={
        "name": "Dee", "vehicle": {"make": "Kia", "model": "Niro", "plate": "FIT-1"}})
    await stack.call("POST", "/v1/drivers/me/online", "driver", driver, want=200,
                     json={"lat": 40.7505, "lng": -73.9905})

    async def offered() -> bool:
        r = await stack.call("GET", "/v1/drivers/me/offers", "driver", driver, want=200)
        return any(o["ride_id"] == ride_id for o in r.json())

    await eventually(offered, f"an offer of ride {ride_id}", timeout=60)
    for step, status in (("accept", "driver_assigned"), ("arrive", "driver_arrived"),
                         ("start", "in_progress")):
        await stack.call("POST", f"/v1/rides/{ride_id}/{step}", "driver", driver, want=202)
        await stack.wait_status(ride_id, rider, status, timeout=60)
    await stack.call("POST", f"/v1/rides/{ride_id}/complete", "driver", driver, want=202,
                     json={"distance_m": 2300, "duration_s": 540})
    await stack.wait_status(ride_id, rider, "completed", timeout=60)


async def test_a_rides_stream_as_nats_29_leaves_it_is_migrated_and_its_ride_completes(
        own_nats, settings: Settings, tmp_path: Path) -> None:
    s = settings.model_copy(update={"nats_url": own_nats.url})
    rides = next(c for c in stream_configs() if c.name == "RIDES")
    nc = await _connect(own_nats.url)
    js = nc.jetstream()
    try:
        # RIDES as 2.9 creates it (the transform dropped), with a ride requested meanwhile:
        # stored as rides.<id>.requested, where no partition's consumer looks
        await js.add_stream(dataclasses.replace(rides, subject_transform=None))
        ride_id, data, subject = _stranded_request("stranded-rider")
        await js.publish(subject, data)

        found = await fit_check(nc, js, repair=False)
        assert [(f.target, f.field) for f in found.findings if f.target == "stream RIDES"] \
            == [("stream RIDES", "subject_transform")]

        # every component refuses to run on it, naming the stream, the field and the fix
        with pytest.raises(NatsUnfit) as refused:
            async with runtime(s, "test", temporal=False):
                pass
        message = str(refused.value)
        assert "stream RIDES: messages outside the partitions is 1" in message
        assert "ridehail streams migrate" in message

        result = await migrate(nc, js, replicas=1, backup_dir=tmp_path / "backups",
                               say=lambda line: None)
        assert result.ok, result.after.explain()
        assert result.rewritten == {"RIDES": 1}
        backup = result.backups[0].read_text().splitlines()
        assert len(backup) == 1 and json.loads(backup[0])["subject"] == subject
        info = await js.stream_info("RIDES")
        assert info.config.subject_transform is not None and info.state.messages == 1
    finally:
        await nc.close()

    # the ride requested while the stream was wrong is booked now, and completes
    async with running_stack(s, reset=False) as stack:
        await _complete_with_driver(stack, ride_id, "stranded-rider", "fit-driver")


async def test_durables_with_another_configuration_are_fixed_or_refused(
        own_nats, settings: Settings, tmp_path: Path) -> None:
    s = settings.model_copy(update={"nats_url": own_nats.url})
    nc = await _connect(own_nats.url)
    js = nc.jetstream()
    try:
        assert (await fit_check(nc, js, repair=True)).ok  # streams created as declared
        (durable, subject), (other, _) = WORKFLOW_TRIGGER.durables()[:2]
        # a wrong filter: updated in place, keeping the durable's position
        wrong_filter = dataclasses.replace(WORKFLOW_TRIGGER.config(durable, subject),
                                           filter_subject="rides.>", filter_subjects=None)
        await js.add_consumer("RIDES", wrong_filter)
        # a wrong ack policy: JetStream cannot change it in place
        wrong_ack = WORKFLOW_TRIGGER.config(other, WORKFLOW_TRIGGER.durables()[1][1])
        wrong_ack.ack_policy = AckPolicy.ALL
        await js.add_consumer("RIDES", wrong_ack)

        found = await fit_check(nc, js, repair=False)
        fields = {(f.target, f.field, f.found) for f in found.findings}
        assert (f"consumer RIDES > {durable}", "filter_subject", "rides.>") in fields
        assert (f"consumer RIDES > {other}", "ack_policy", "all") in fields

        with pytest.raises(NatsUnfit) as refused:
            async with runtime(s, "test", temporal=False):
                pass
        message = str(refused.value)
        assert f"consumer RIDES > {other}: ack_policy is all; needed explicit" in message
        assert durable + ":" not in message  # the filter was fixed in place
        fixed_filter = (await js.consumer_info("RIDES", durable)).config
        assert sorted(fixed_filter.filter_subjects or []) == \
            WORKFLOW_TRIGGER.filter_subjects(subject)

        result = await migrate(nc, js, replicas=1, backup_dir=tmp_path, say=lambda _: None)
        assert result.ok, result.after.explain()
        assert result.recreated == [f"RIDES > {other} from sequence 1"]
        fixed = await js.consumer_info("RIDES", other)
        assert fixed.config.ack_policy == AckPolicy.EXPLICIT
    finally:
        await nc.close()

    # and rides run on the repaired durables
    async with running_stack(s, reset=False) as stack:
        r = await stack.call("POST", "/v1/rides", "rider", "fit-rider", want=202, json={
            "pickup": {"lat": 40.75, "lng": -73.99}, "dropoff": {"lat": 40.76, "lng": -73.97}})
        await _complete_with_driver(stack, r.json()["ride_id"], "fit-rider", "fit-driver-2")


async def _rides_messages(js: JetStreamContext) -> int:
    return int((await js.stream_info("RIDES")).state.messages)


async def test_an_event_leaves_rides_and_drivers_once_the_window_is_over(own_nats) -> None:
    nc = await _connect(own_nats.url)
    js = nc.jetstream()
    try:
        assert (await fit_check(nc, js, keep_s=2, repair=True)).ok
        _, data, subject = _stranded_request("kept-rider")
        await js.publish(subject, data)
        await js.publish("drivers.d-kept.online", b"{}")
        assert await _rides_messages(js) == 1

        async def gone() -> bool:
            drivers = (await js.stream_info("DRIVERS")).state.messages
            return await _rides_messages(js) == 0 and drivers == 0

        await eventually(gone, "the events leaving RIDES and DRIVERS", timeout=20)
        assert (await js.stream_info("RIDES")).state.last_seq == 1  # deleted, not lost
    finally:
        await nc.close()


async def _streams_as_0_2_made_them(js: JetStreamContext) -> None:
    """RIDES and DRIVERS with no age limit and a one-hour duplicate window."""
    for config in stream_configs():
        await js.add_stream(dataclasses.replace(
            config, duplicate_window=3600,
            max_age=0 if config.name in ("RIDES", "DRIVERS") else config.max_age))


async def test_a_stream_from_before_the_age_limit_is_refused_by_every_component(
        own_nats, settings: Settings) -> None:
    s = settings.model_copy(update={"nats_url": own_nats.url})
    nc = await _connect(own_nats.url)
    js = nc.jetstream()
    try:
        await _streams_as_0_2_made_them(js)
        _, data, subject = _stranded_request("old-rider")
        await js.publish(subject, data)
        found = await fit_check(nc, js, keep_s=2, repair=True)
        ages = {(f.target, f.field, f.found, f.needed) for f in found.findings}
        assert ages == {("stream RIDES", "max_age", "unlimited", "2s"),
                        ("stream DRIVERS", "max_age", "unlimited", "2s")}
        assert "ridehail streams migrate" in found.findings[0].fix
        assert any("duplicate_window" in line for line in found.done)  # that, in place
        await asyncio.sleep(3)
        assert await _rides_messages(js) == 1  # the check deleted nothing

        # every component refuses to shorten it itself
        with pytest.raises(NatsUnfit) as refused:
            async with runtime(s, "test", temporal=False):
                pass
        assert ("stream RIDES: max_age is unlimited; needed 86400s. Fix: run `ridehail "
                "streams migrate`") in str(refused.value)
    finally:
        await nc.close()


async def test_migrate_shortens_the_age_limit_only_once_every_durable_has_the_events(
        own_nats, tmp_path: Path) -> None:
    nc = await _connect(own_nats.url)
    js = nc.jetstream()
    try:
        await _streams_as_0_2_made_them(js)
        durable, data = await _behind_durable(js, "behind-rider")
        await asyncio.sleep(2.5)  # older than the window now

        # the durable has not read it: migrate leaves the limit as it was, and says why
        said: list[str] = []
        result = await migrate(nc, js, replicas=1, keep_s=2, backup_dir=tmp_path,
                               say=said.append)
        assert not result.ok
        assert [b.consumer for b in result.behind] == [f"RIDES > {durable}"]
        assert "has not acknowledged sequence 1" in str(result.behind[0])
        assert result.shortened["RIDES"].startswith("left at unlimited")
        assert result.shortened["DRIVERS"] == "unlimited → 2s"  # nobody behind there
        assert await _rides_messages(js) == 1

        # it waits for the durable, which reads the event meanwhile
        waiting = asyncio.create_task(migrate(nc, js, replicas=1, keep_s=2,
                                              backup_dir=tmp_path, say=said.append,
                                              wait_s=60))

        async def waits() -> bool:
            return any("waiting for 1 durable" in line for line in said)

        await eventually(waits, "migrate waiting for the durable", timeout=20)
        sub = await js.pull_subscribe_bind(durable=durable, stream="RIDES")
        (msg,) = await sub.fetch(1, timeout=5)
        assert msg.data == data
        await msg.ack_sync()
        result = await asyncio.wait_for(waiting, 60)
        assert result.ok, result.after.explain()
        assert result.shortened == {"RIDES": "unlimited → 2s"}
        assert result.rewritten == {} and result.recreated == []
        assert await _rides_messages(js) == 0
        assert (await fit_check(nc, js, keep_s=2, repair=False)).ok
    finally:
        await nc.close()


async def _behind_durable(js: JetStreamContext, rider: str) -> tuple[str, bytes]:
    """A ride requested on RIDES, and the ride projector's durable of its partition,
    which has not read it: (the durable, the event)."""
    _, data, subject = _stranded_request(rider)
    await js.publish(subject, data)
    stored = next(iter((await js.stream_info("RIDES", subjects_filter="rides.>")
                        ).state.subjects or {}))
    durable, filter_subject = RIDE_PROJECTOR.durables()[int(stored.split(".")[1])]
    await js.add_consumer("RIDES", RIDE_PROJECTOR.config(durable, filter_subject))
    return durable, data


async def test_dev_shortens_the_age_limit_of_its_own_nats_once_nothing_is_behind(
        own_nats, settings: Settings) -> None:
    # (model_copy does not validate: a keep of 2 s, below what the setting allows)
    s = settings.model_copy(update={"nats_url": own_nats.url, "stream_keep_s": 2})
    nc = await _connect(own_nats.url)
    js = nc.jetstream()
    try:
        await _streams_as_0_2_made_them(js)
        durable, _ = await _behind_durable(js, "dev-rider")
        await asyncio.sleep(2.5)
        said: list[str] = []
        with pytest.raises(DevStackError) as refused:
            await shorten_own_streams(s, said.append)
        assert f"RIDES > {durable} has not acknowledged sequence 1" in str(refused.value)
        assert "Start ridehail dev once with RIDEHAIL_STREAM_KEEP_S=7200" in str(refused.value)
        assert await _rides_messages(js) == 1

        sub = await js.pull_subscribe_bind(durable=durable, stream="RIDES")
        await (await sub.fetch(1, timeout=5))[0].ack_sync()
        await shorten_own_streams(s, said.append)
        assert any(line.startswith("RIDES: keeps an event 2s now") for line in said), said
        assert await _rides_messages(js) == 0
        assert (await fit_check(nc, js, keep_s=2, repair=False)).ok
    finally:
        await nc.close()


async def test_streams_migrate_moves_a_deployment_to_the_window(own_nats) -> None:
    nc = await _connect(own_nats.url)
    try:
        await _streams_as_0_2_made_them(nc.jetstream())
    finally:
        await nc.close()
    env = {**os.environ, "RIDEHAIL_NATS_URL": own_nats.url, "RIDEHAIL_STREAM_KEEP_S": "60"}

    def ridehail(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(ridehail_command(*args), env=env, capture_output=True,
                              text=True, timeout=120)

    check = await asyncio.to_thread(ridehail, "streams", "check", "--json")
    assert check.returncode == 1, check.stderr
    fields = {(f["target"], f["field"]) for f in json.loads(check.stdout)["findings"]}
    assert ("stream RIDES", "max_age") in fields and ("stream RIDES", "duplicate_window") in fields
    moved = await asyncio.to_thread(ridehail, "streams", "migrate", "--json")
    assert moved.returncode == 0, moved.stderr
    result = json.loads(moved.stdout)
    assert result["ok"] and result["shortened"] == {"RIDES": "unlimited → 60s",
                                                    "DRIVERS": "unlimited → 60s"}
    assert "RIDES: keeps an event 60s now" in moved.stderr
    check = await asyncio.to_thread(ridehail, "streams", "check")
    assert check.returncode == 0, check.stdout + check.stderr


async def _notifications_messages(js: JetStreamContext) -> int:
    return int((await js.stream_info("NOTIFICATIONS")).state.messages)


async def _streams_with_a_notice(js: JetStreamContext) -> None:
    """The streams as declared with the default keeps (NOTIFICATIONS: 30 days, as every
    ridehail made it before the setting bounded it), and one notification sent."""
    for config in stream_configs():
        await js.add_stream(config)
    await js.publish("notifications.notice-rider.sent", b"{}")


async def test_a_notifications_stream_longer_than_its_setting_shortens_by_migration(
        own_nats, settings: Settings, tmp_path: Path) -> None:
    # (model_copy does not validate: a keep of 2 s, below what the setting allows)
    s = settings.model_copy(update={"nats_url": own_nats.url, "notification_keep_s": 2})
    nc = await _connect(own_nats.url)
    js = nc.jetstream()
    try:
        await _streams_with_a_notice(js)
        found = await fit_check(nc, js, keep_s=s.stream_keep_s, notification_keep_s=2,
                                repair=True)
        assert {(f.target, f.field, f.found, f.needed) for f in found.findings} == {
            ("stream NOTIFICATIONS", "max_age", "2592000s", "2s")}
        assert "ridehail streams migrate" in found.findings[0].fix
        assert any("duplicate_window" in line for line in found.done)  # that, in place
        await asyncio.sleep(3)
        assert await _notifications_messages(js) == 1  # the check deleted nothing

        # every component refuses to shorten it itself
        with pytest.raises(NatsUnfit) as refused:
            async with runtime(s, "test", temporal=False):
                pass
        assert ("stream NOTIFICATIONS: max_age is 2592000s; needed 2s. Fix: run `ridehail "
                "streams migrate`") in str(refused.value)

        # no ridehail durable reads NOTIFICATIONS; another service's that has not
        # acknowledged the notice holds the shortening back, as on RIDES
        await js.add_consumer("NOTIFICATIONS", ConsumerConfig(
            durable_name="push-gateway", ack_policy=AckPolicy.EXPLICIT,
            filter_subject="notifications.>"))
        result = await migrate(nc, js, replicas=1, keep_s=s.stream_keep_s,
                               notification_keep_s=2, backup_dir=tmp_path,
                               say=lambda _: None)
        assert not result.ok
        assert [b.consumer for b in result.behind] == ["NOTIFICATIONS > push-gateway"]
        assert keeping_settings(result.behind) == {"RIDEHAIL_NOTIFICATION_KEEP_S": 7200}
        assert result.shortened == {"NOTIFICATIONS": "left at 2592000s: 1 durable(s) behind"}
        assert await _notifications_messages(js) == 1

        sub = await js.pull_subscribe_bind(durable="push-gateway", stream="NOTIFICATIONS")
        await (await sub.fetch(1, timeout=5))[0].ack_sync()
        said: list[str] = []
        result = await migrate(nc, js, replicas=1, keep_s=s.stream_keep_s,
                               notification_keep_s=2, backup_dir=tmp_path, say=said.append)
        assert result.ok, result.after.explain()
        assert result.shortened == {"NOTIFICATIONS": "2592000s → 2s"}
        assert result.rewritten == {} and result.recreated == []
        assert any(line.startswith("NOTIFICATIONS: keeps an event 2s now") for line in said)
        assert await _notifications_messages(js) == 0
        assert (await js.stream_info("RIDES")).config.max_age == s.stream_keep_s
        assert (await fit_check(nc, js, keep_s=s.stream_keep_s, notification_keep_s=2,
                                repair=False)).ok
    finally:
        await nc.close()


async def test_dev_shortens_notifications_of_its_own_nats_with_no_durable_to_wait_for(
        own_nats, settings: Settings) -> None:
    s = settings.model_copy(update={"nats_url": own_nats.url, "notification_keep_s": 2})
    nc = await _connect(own_nats.url)
    js = nc.jetstream()
    try:
        await _streams_with_a_notice(js)
        await asyncio.sleep(2.5)
        said: list[str] = []
        await shorten_own_streams(s, said.append)
        assert any(line.startswith("NOTIFICATIONS: keeps an event 2s now") for line in said), said
        assert await _notifications_messages(js) == 0
        # and a notification sent now leaves once it is older than the keep
        await js.publish("notifications.notice-rider.sent", b"{}")

        async def gone() -> bool:
            return await _notifications_messages(js) == 0

        await eventually(gone, "the notification leaving NOTIFICATIONS", timeout=20)
        assert (await fit_check(nc, js, keep_s=s.stream_keep_s, notification_keep_s=2,
                                repair=False)).ok
    finally:
        await nc.close()


async def test_streams_migrate_moves_notifications_to_their_setting(own_nats) -> None:
    nc = await _connect(own_nats.url)
    try:
        await _streams_with_a_notice(nc.jetstream())
    finally:
        await nc.close()
    env = {**os.environ, "RIDEHAIL_NATS_URL": own_nats.url, "RIDEHAIL_STREAM_KEEP_S": "86400",
           "RIDEHAIL_NOTIFICATION_KEEP_S": "60"}

    def ridehail(*args: str, **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(ridehail_command(*args), env={**env, **more},
                              capture_output=True, text=True, timeout=120)

    check = await asyncio.to_thread(ridehail, "streams", "check", "--json")
    assert check.returncode == 1, check.stderr
    findings = {(f["target"], f["field"], f["found"], f["needed"]): f["fix"]
                for f in json.loads(check.stdout)["findings"]}
    assert set(findings) == {("stream NOTIFICATIONS", "max_age", "2592000s", "60s"),
                             ("stream NOTIFICATIONS", "duplicate_window", "300s", "60s")}
    assert "ridehail streams migrate" in findings[
        ("stream NOTIFICATIONS", "max_age", "2592000s", "60s")]
    moved = await asyncio.to_thread(ridehail, "streams", "migrate", "--json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["shortened"] == {"NOTIFICATIONS": "2592000s → 60s"}
    check = await asyncio.to_thread(ridehail, "streams", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    # a keep JetStream would read as "for good" is refused before NATS is asked
    refused = await asyncio.to_thread(ridehail, "streams", "check",
                                      RIDEHAIL_NOTIFICATION_KEEP_S="0")
    assert refused.returncode == 2
    assert "RIDEHAIL_NOTIFICATION_KEEP_S is 0" in refused.stderr


def test_streams_migrate_refuses_an_unreachable_server() -> None:
    port = free_port()
    run = subprocess.run(
        ridehail_command("streams", "migrate"),
        env={**os.environ, "RIDEHAIL_NATS_URL": f"nats://127.0.0.1:{port}"},
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert f"cannot reach NATS at nats://127.0.0.1:{port}" in run.stderr


async def test_dev_registers_a_namespace_the_temporal_server_lacks(
        settings: Settings, tmp_path: Path) -> None:
    namespace = f"rides-{uuid.uuid4().hex[:8]}"
    dev = settings.model_copy(update={"temporal_namespace": namespace,
                                      "data_dir": tmp_path / "dev"})
    stack = DevStack(dev, say=lambda line: None, explicit={"temporal_address", "nats_url"})
    await stack.start_servers()
    try:
        assert stack.started == []  # both servers reused
        client = await connect_temporal(stack.settings)
        assert await namespace_exists(client, namespace)
        assert await missing_search_attributes(client, namespace) == []
    finally:
        stack.stop_servers()


async def test_dev_starts_its_own_temporal_when_the_default_address_is_not_temporal(
        settings: Settings, tmp_path: Path) -> None:
    """Something else answers on the (default) Temporal address: here, a nats-server."""
    nats_host, nats_port = settings.nats_host_port
    dev = settings.model_copy(update={"temporal_address": f"{nats_host}:{nats_port}",
                                      "temporal_ui_port": free_port(),
                                      "data_dir": tmp_path / "dev"})
    said: list[str] = []
    stack = DevStack(dev, say=said.append, explicit={"nats_url"})
    await stack.start_servers()
    try:
        assert [s.name for s in stack.started] == ["temporal"]
        assert stack.settings.temporal_address != dev.temporal_address
        assert any("starting a Temporal server of its own" in line for line in said), said
        client = await connect_temporal(stack.settings)
        assert await missing_search_attributes(client, dev.temporal_namespace) == []
    finally:
        stack.stop_servers()

    refused = DevStack(dev, say=lambda line: None, explicit={"nats_url", "temporal_address"})
    with pytest.raises(DevStackError, match="no Temporal frontend answers there"):
        await refused.start_servers()
