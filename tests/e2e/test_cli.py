"""The operator commands, run as a user runs them: token, audit, dlq list and redrive,
projections rebuild."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import jwt

from domain.status import RideStatus
from events.dlq import list_dead_letters
from infra.config import Settings
from ridehail.ops.audit import run_audit
from store.tables import LedgerEntry, OutboxEvent, Ride, utcnow
from tests.support.rides import DROPOFF, PICKUP
from tests.support.stack import Stack, eventually, running_stack

RIDEHAIL = str(Path(sys.executable).parent / "ridehail")


def run(settings: Settings | None, *args: str, secret: bool = False,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``ridehail *args`` with these settings; the JWT secret only with ``secret`` (only
    the commands that sign or check tokens need it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    if settings is not None:
        env.update(RIDEHAIL_DATA_DIR=str(settings.data_dir),
                   RIDEHAIL_DATABASE_URL=settings.db_url,
                   RIDEHAIL_NATS_URL=settings.nats_url,
                   RIDEHAIL_TEMPORAL_ADDRESS=settings.temporal_address)
        if secret:
            env["RIDEHAIL_JWT_SECRET"] = settings.require_jwt_secret()
    return subprocess.run([RIDEHAIL, *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_token_is_signed_with_the_secret(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret="s" * 32)
    out = run(settings, "token", "--role", "driver", "--sub", "bob", secret=True)
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), "s" * 32, algorithms=["HS256"])
    assert claims["role"] == "driver" and claims["sub"] == "bob" and claims["exp"] > 0
    assert claims["exp"] - claims["iat"] == 3600  # the default --ttl, from iat


def test_token_refuses_without_a_secret_and_rejects_bad_roles(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret="s" * 32)
    missing = run(settings, "token", "--role", "rider", "--sub", "a")
    assert missing.returncode == 2 and "RIDEHAIL_JWT_SECRET" in missing.stderr
    assert str(tmp_path / "jwt_secret") in missing.stderr  # where it looked
    bad = run(settings, "token", "--role", "pilot", "--sub", "a", secret=True)
    assert bad.returncode == 2 and "rider, driver, admin" in bad.stderr
    refused = run(settings, "api")
    assert refused.returncode == 2 and "RIDEHAIL_JWT_SECRET" in refused.stderr


def test_token_refuses_a_lifetime_the_api_would_refuse(tmp_path: Path) -> None:
    """--ttl above RIDEHAIL_JWT_MAX_TTL_S (a day) is refused, naming the maximum; a day
    exactly is signed, with iat now and exp a day later."""
    settings = Settings(data_dir=tmp_path, jwt_secret="s" * 32)
    for ttl in ("999999", "86401", "0"):
        refused = run(settings, "token", "--role", "rider", "--sub", "a", "--ttl", ttl,
                      secret=True)
        assert refused.returncode == 2 and not refused.stdout, refused
        assert "--ttl" in refused.stderr and "86400" in refused.stderr
    out = run(settings, "token", "--role", "rider", "--sub", "a", "--ttl", "86400",
              secret=True)
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), "s" * 32, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 86400


def test_token_uses_the_secret_ridehail_dev_keeps_and_says_where(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "jwt_secret").write_text("f" * 32 + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run(Settings(data_dir=data), "token", "--role", "rider", "--sub", "alice",
              cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert jwt.decode(out.stdout.strip(), "f" * 32, algorithms=["HS256"])["sub"] == "alice"
    assert f"using the JWT secret in {data / 'jwt_secret'}" in out.stderr
    # RIDEHAIL_JWT_SECRET wins over the file, silently
    env_wins = run(Settings(data_dir=data, jwt_secret="e" * 32), "token", "--role", "rider",
                   "--sub", "alice", secret=True)
    assert jwt.decode(env_wins.stdout.strip(), "e" * 32, algorithms=["HS256"])
    assert "using the JWT secret" not in env_wins.stderr


async def test_audit_passes_then_reports_each_broken_invariant(stack: Stack) -> None:
    r = await stack.call("POST", "/v1/rides", "rider", "r1", want=202,
                         json={"pickup": PICKUP, "dropoff": DROPOFF,
                               "payment_method": "card_declined"})
    ride_id = r.json()["ride_id"]
    await stack.wait_status(ride_id, "r1", RideStatus.FAILED)

    async def saga_closed_and_visible() -> bool:  # Temporal's visibility is eventual
        report = await run_audit(stack.db, stack.rt.js, stack.temporal)
        return report.checks[2].checked == 1

    await eventually(saga_closed_and_visible, "the ended saga to be listed")
    ok = run(stack.settings, "audit", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and [c["number"] for c in report["checks"]] == [1, 2, 3, 4, 5, 6, 7, 8]

    # a message no consumer can read, dead-lettered (7; and 5: it is on RIDES)
    await stack.rt.js.publish("rides.junk.driver_arrived", b"junk", headers={"Nats-Msg-Id": "junk"})

    async def all_dead_lettered() -> bool:
        return len(await list_dead_letters(stack.rt.js)) == 3  # trigger, projector, notifier

    await eventually(all_dead_lettered, "the junk to be dead-lettered")

    # break invariants 2, 3, 4 and 6 behind the system's back (quickly: the relay would
    # publish the stale outbox row)
    def corrupt(session) -> None:  # type: ignore[no-untyped-def]
        ride = session.get(Ride, ride_id)
        ride.status = "completed"  # the saga ended failed
        session.add(ride)
        session.add(LedgerEntry(ride_id="bad", kind="capture", amount_cents=500,
                                idempotency_key="bad:capture", gateway_ref="x"))
        session.add(OutboxEvent(event_id="stale", aggregate_id="bad", subject="rides.bad.x",
                                body="{}", created_at=utcnow().replace(year=2020)))
        # a ride left matching long past its deadline, with no workflow
        session.add(Ride(**{**ride.model_dump(), "ride_id": "stuck", "status": "matching",
                            "created_at": utcnow().replace(year=2020)}))

    await stack.db.write(corrupt)
    bad = run(stack.settings, "audit", "--json")
    assert bad.returncode == 1
    failed = {c["number"]: c for c in json.loads(bad.stdout)["checks"] if not c["ok"]}
    assert set(failed) == {2, 3, 4, 5, 6, 7}
    assert failed[6]["violations"] == ["ride stuck is matching and has no workflow"]
    letters = await list_dead_letters(stack.rt.js)  # one for each consumer that read it
    assert [v.split(":")[0] for v in failed[7]["violations"]] == [
        f"dead letter {d.id}" for d in letters]
    for letter in letters:
        discarded = run(stack.settings, "dlq", "discard", str(letter.id))
        assert discarded.returncode == 0, discarded.stderr
    # (the relay may have published the stale row meanwhile, and its junk been
    # dead-lettered in turn: only the discarded ones must be gone)
    left = {d.id for d in await list_dead_letters(stack.rt.js)}
    assert not left & {d.id for d in letters}
    assert "captured 500 > authorized 0" in failed[2]["violations"][0]
    assert failed[3]["violations"] == [
        f"ride {ride_id}: saga ended failed, read model says completed"]
    human = run(stack.settings, "audit")  # the report is the result: on stdout
    assert human.returncode == 1 and "FAIL" in human.stdout, human.stderr
    assert f"ride {ride_id}: saga ended failed, read model says completed" in human.stdout


async def test_dlq_list_and_redrive(stack: Stack) -> None:
    await stack.rt.js.publish("rides.junk.driver_arrived", b"junk", headers={"Nats-Msg-Id": "junk"})

    async def listed() -> list[dict] | None:
        out = run(stack.settings, "dlq", "list", "--json")
        letters = [json.loads(line) for line in out.stdout.splitlines()]
        return letters if len(letters) == 3 else None

    letters = await eventually(listed, "three dead letters to be listed")
    assert {d["consumer"] for d in letters} == {"ride-projector", "workflow-trigger",
                                                "notifier"}
    assert all(d["subject"] == "rides.junk.driver_arrived" and "not a ridehail" in d["error"]
               for d in letters)
    # the table, on stdout, keeps whole lines in a pipe: `ridehail dlq list | grep arrived`
    human = run(stack.settings, "dlq", "list")
    assert human.returncode == 0 and "3 dead letters" in human.stdout
    found = [line for line in human.stdout.splitlines() if "arrived" in line]
    assert len(found) == 3 and all("rides.junk.driver_arrived" in line
                                   and "not a ridehail" in line for line in found), human.stdout
    redriven = run(stack.settings, "dlq", "redrive", "1")
    assert redriven.returncode == 0 and "rides.junk.driver_arrived" in redriven.stdout
    missing = run(stack.settings, "dlq", "redrive", "999")
    assert missing.returncode == 1 and "no dead letter 999" in missing.stderr


def test_replay_command_passes_the_recorded_histories_and_fails_a_changed_one(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret="s" * 32)
    histories = Path(__file__).parents[1] / "histories"
    ok = run(settings, "replay", "--dir", str(histories))
    assert ok.returncode == 0, ok.stderr
    assert f"{len(list(histories.glob('*.json')))} of" in ok.stdout and "cleanly" in ok.stdout
    as_json = run(settings, "replay", "--dir", str(histories), "--json")
    assert as_json.returncode == 0
    outcomes = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(outcomes) == len(list(histories.glob("*.json")))
    assert all(o["ok"] and o["events"] > 10 for o in outcomes), outcomes

    # a history whose first two activities ran in the other order than the code asks
    events = json.loads((histories / "happy_path.json").read_text())
    scheduled = [e["activityTaskScheduledEventAttributes"]["activityType"]
                 for e in events["events"] if "activityTaskScheduledEventAttributes" in e]
    scheduled[0]["name"], scheduled[1]["name"] = scheduled[1]["name"], scheduled[0]["name"]
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "reordered.json").write_text(json.dumps(events))
    bad = run(settings, "replay", "--dir", str(changed))
    assert bad.returncode == 1
    assert "FAIL reordered.json" in bad.stdout and "Nondeterminism" in bad.stdout

    empty = run(settings, "replay", "--dir", str(tmp_path / "nothing"))
    assert empty.returncode == 2 and "no *.json histories" in empty.stderr
    neither = run(settings, "replay")
    assert neither.returncode == 2 and "exactly one of --dir or --query" in neither.stderr


async def test_an_empty_dlq_is_a_result(stack: Stack) -> None:
    empty = run(stack.settings, "dlq", "list")
    assert empty.returncode == 0 and empty.stdout.strip() == "the DLQ is empty", empty
    assert run(stack.settings, "dlq", "list", "--json").stdout == ""


async def test_rebuild_refuses_while_projectors_run_unless_forced(settings: Settings) -> None:
    async with running_stack(settings, components=("consumers",)) as stack:
        refused = await asyncio.to_thread(run, stack.settings, "projections", "rebuild")
        assert refused.returncode == 1, refused
        assert "ride-projector-p" in refused.stderr and "driver-projector-p" in refused.stderr
        assert "--force" in refused.stderr and "ridehail consumers" in refused.stderr
        forced = await asyncio.to_thread(run, stack.settings, "projections", "rebuild",
                                         "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout)["rides"] == 0
    # the projectors stopped: it rebuilds
    done = run(settings, "projections", "rebuild")
    assert done.returncode == 0 and done.stdout.startswith("rebuilt 0 rides"), done


def test_db_upgrade_reports_on_stdout_and_as_json(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = run(settings, "db", "upgrade", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["before"] is None and report["after"] and report["changed"]
    again = run(settings, "db", "upgrade")
    assert again.returncode == 0 and "(up to date)" in again.stdout, again
