"""The operator commands, run as a user runs them: token, audit, dlq list and redrive,
projections rebuild."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jwt

from ridehail.config import Settings
from ridehail.domain.status import RideStatus
from ridehail.ops.audit import run_audit
from ridehail.store.tables import LedgerEntry, OutboxEvent, Ride, utcnow
from tests.support.rides import DROPOFF, PICKUP
from tests.support.stack import Stack, eventually

RIDEHAIL = str(Path(sys.executable).parent / "ridehail")


def run(settings: Settings | None, *args: str, secret: bool = True
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIDEHAIL_")}
    if settings is not None:
        env.update(RIDEHAIL_DATA_DIR=str(settings.data_dir),
                   RIDEHAIL_DATABASE_URL=settings.db_url,
                   RIDEHAIL_NATS_URL=settings.nats_url,
                   RIDEHAIL_TEMPORAL_ADDRESS=settings.temporal_address)
        if secret:
            env["RIDEHAIL_JWT_SECRET"] = settings.require_jwt_secret()
    return subprocess.run([RIDEHAIL, *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_token_is_signed_with_the_secret(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret="s" * 32)
    out = run(settings, "token", "--role", "driver", "--sub", "bob")
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), "s" * 32, algorithms=["HS256"])
    assert claims["role"] == "driver" and claims["sub"] == "bob" and claims["exp"] > 0


def test_token_refuses_without_a_secret_and_rejects_bad_roles(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret="s" * 32)
    missing = run(settings, "token", "--role", "rider", "--sub", "a", secret=False)
    assert missing.returncode == 2 and "RIDEHAIL_JWT_SECRET" in missing.stderr
    bad = run(settings, "token", "--role", "pilot", "--sub", "a")
    assert bad.returncode == 2 and "rider, driver, admin" in bad.stderr
    for command in ("api", "worker", "consumers", "relay", "audit"):
        refused = run(settings, command, secret=False)
        assert refused.returncode == 2 and "RIDEHAIL_JWT_SECRET" in refused.stderr, command


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
    assert report["ok"] and [c["number"] for c in report["checks"]] == [1, 2, 3, 4, 5]

    # break invariants 2, 3 and 4 behind the system's back
    def corrupt(session) -> None:  # type: ignore[no-untyped-def]
        ride = session.get(Ride, ride_id)
        ride.status = "completed"  # the saga ended failed
        session.add(ride)
        session.add(LedgerEntry(ride_id="bad", kind="capture", amount_cents=500,
                                idempotency_key="bad:capture", gateway_ref="x"))
        session.add(OutboxEvent(event_id="stale", aggregate_id="bad", subject="rides.bad.x",
                                body="{}", created_at=utcnow().replace(year=2020)))

    await stack.db.write(corrupt)
    bad = run(stack.settings, "audit", "--json")
    assert bad.returncode == 1
    failed = {c["number"]: c for c in json.loads(bad.stdout)["checks"] if not c["ok"]}
    assert set(failed) == {2, 3, 4}
    assert "captured 500 > authorized 0" in failed[2]["violations"][0]
    assert failed[3]["violations"] == [
        f"ride {ride_id}: saga ended failed, read model says completed"]
    human = run(stack.settings, "audit")
    assert human.returncode == 1 and "FAIL" in human.stderr


async def test_dlq_list_and_redrive(stack: Stack) -> None:
    await stack.rt.js.publish("rides.junk.requested", b"junk", headers={"Nats-Msg-Id": "junk"})

    async def listed() -> list[dict] | None:
        out = run(stack.settings, "dlq", "list", "--json")
        letters = [json.loads(line) for line in out.stdout.splitlines()]
        return letters if len(letters) == 3 else None

    letters = await eventually(listed, "three dead letters to be listed")
    assert {d["consumer"] for d in letters} == {"ride-projector", "workflow-trigger",
                                                "notifier"}
    assert all(d["subject"] == "rides.junk.requested" and "not a ridehail" in d["error"]
               for d in letters)
    human = run(stack.settings, "dlq", "list")
    assert human.returncode == 0 and "3 dead letters" in human.stderr
    redriven = run(stack.settings, "dlq", "redrive", "1")
    assert redriven.returncode == 0 and "rides.junk.requested" in redriven.stderr
    missing = run(stack.settings, "dlq", "redrive", "999")
    assert missing.returncode == 1 and "no dead letter 999" in missing.stderr


def test_replay_command_passes_the_recorded_histories_and_fails_a_changed_one(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, jwt_secret="s" * 32)
    histories = Path(__file__).parents[1] / "histories"
    ok = run(settings, "replay", "--dir", str(histories))
    assert ok.returncode == 0, ok.stderr
    assert f"{len(list(histories.glob('*.json')))} of" in ok.stderr and "cleanly" in ok.stderr

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
    assert "FAIL reordered.json" in bad.stderr and "Nondeterminism" in bad.stderr

    empty = run(settings, "replay", "--dir", str(tmp_path / "nothing"))
    assert empty.returncode == 2 and "no *.json histories" in empty.stderr
    neither = run(settings, "replay")
    assert neither.returncode == 2 and "exactly one of --dir or --query" in neither.stderr
