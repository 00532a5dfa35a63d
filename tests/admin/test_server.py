"""The admin API against a running app on the Discord sandbox."""

from __future__ import annotations

import asyncio
import re

import pytest

from gouache.admin.server import AdminServer
from gouache.errors import ConfigError
from gouache.jobs import JobState

from ..e2e.conftest import embed_title
from .conftest import TOKEN, AdminFactory


async def test_status_shape_after_a_job(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 2, "instant-b": 1})
    alice = admin.world.member("alice")
    job = await admin.imagine_job(alice, "a lighthouse")
    await admin.wait_state(job.id, JobState.SUCCEEDED)

    status = await admin.ok("GET", "/status")
    assert status["process"] == admin.world.app.dispatcher.owner
    assert [w["name"] for w in status["workers"]] == ["instant-a", "instant-b"]
    row = status["workers"][0]
    assert row["kind"] == "instant" and row["state"] == "ready"
    assert row["capacity"] == 2 and row["in_flight"] == 0 and row["done_today"] == 1
    assert set(row) >= {"latency_ms", "last_error", "reason", "process", "reconnects"}
    assert status["summary"] == {
        "ready": 2,
        "total": 2,
        "in_flight": 0,
        "capacity": 3,
        "queue_depth": 0,
        "jobs_today": 1,
        "errors_last_hour": 0,
    }
    assert status["jobs_today"] == {"by_state": {"succeeded": 1}, "exact": True}
    assert status["queue"] == {"depth": 0, "by_tier": {}}
    assert status["in_flight"] == {"this_process": 0, "all": 0}
    assert status["errors_last_hour"] == []


async def test_queue_depth_per_tier_and_errors_in_status(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 1})
    worker = admin.workers["instant-a"]
    worker.behaviour.fail_next = 1
    bob = admin.world.member("bob")
    failed = await admin.imagine_job(bob, "fails")
    await admin.wait_state(failed.id, JobState.FAILED)
    worker.behaviour.hang_next = 1
    running = await admin.imagine_job(bob, "hangs")
    await admin.wait_state(running.id, JobState.SUBMITTED)
    vip = admin.world.member("vera", vip=True)
    await admin.imagine_job(vip, "vip waits")
    await admin.imagine_job(bob, "member waits")

    status = await admin.ok("GET", "/status")
    assert status["queue"] == {"depth": 2, "by_tier": {"default": 1, "vip": 1}}
    assert status["summary"]["in_flight"] == 1 and status["summary"]["queue_depth"] == 2
    assert status["jobs"]["queued"] == 2 and status["jobs"]["submitted"] == 1
    assert status["jobs_today"]["by_state"] == {"failed": 1, "queued": 2, "submitted": 1}
    (error,) = status["errors_last_hour"]
    assert error["job_id"] == failed.id and error["code"] == "worker_error"
    assert error["user_id"] == bob.id


async def test_auth_is_required_and_checked(make_admin: AdminFactory) -> None:
    admin = await make_admin()
    for path in ("/status", "/metrics", "/queue"):
        status, body = await admin.call("GET", path, token=None)
        assert status == 401 and body["error"] == "unauthorized", path
        status, body = await admin.call("GET", path, token=TOKEN + "x")
        assert status == 401, path
    status, body = await admin.call("POST", "/workers/instant-a/disable", token="nope")
    assert status == 401
    assert admin.world.app.pool.snapshot()[0].state.value == "ready"  # nothing changed
    async with admin.http.get(
        admin.url + "/status", headers={"Authorization": "Basic " + TOKEN}
    ) as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    # JSON is required for changes (a browser cannot send it cross-site without a preflight).
    async with admin.http.post(
        admin.url + "/workers/instant-a/drain",
        data="x",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"},
    ) as r:
        assert r.status == 415
    assert admin.world.app.pool.snapshot()[0].state.value == "ready"
    assert TOKEN not in repr(admin.server)


async def test_without_a_token_only_loopback_hosts_are_answered(make_admin: AdminFactory) -> None:
    admin = await make_admin(token=None)
    status, _ = await admin.call("GET", "/status", token=None)
    assert status == 200
    status, body = await admin.call(
        "GET", "/status", token=None, headers={"Host": "evil.example:8765"}
    )
    assert status == 403 and body["error"] == "forbidden_host"


async def test_refuses_a_public_address_without_a_token(make_admin: AdminFactory) -> None:
    admin = await make_admin()
    app = admin.world.app
    with pytest.raises(ConfigError, match=r"admin\.token: required .*0\.0\.0\.0"):
        await AdminServer(app.port, "0.0.0.0", 0, None).start()
    public = AdminServer(app.port, "0.0.0.0", 0, "a-long-enough-token")
    await public.start()
    try:
        assert public.port > 0
    finally:
        await public.aclose()
    # The port already taken: one clear error, nothing left listening.
    with pytest.raises(ConfigError, match=r"admin\.listen: cannot listen on 127\.0\.0\.1:"):
        await AdminServer(app.port, "127.0.0.1", admin.server.port, TOKEN).start()


async def test_disable_drain_enable_change_status_and_dispatch(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 2, "instant-b": 2})
    a, b = admin.workers["instant-a"], admin.workers["instant-b"]
    row = (await admin.ok("POST", "/workers/instant-a/disable", {"reason": "maintenance"}))[
        "worker"
    ]
    assert row["state"] == "disabled" and row["reason"] == "maintenance"
    status = await admin.ok("GET", "/status")
    assert [w["state"] for w in status["workers"]] == ["disabled", "ready"]
    assert status["summary"]["ready"] == 1 and status["summary"]["capacity"] == 2

    carol = admin.world.member("carol")
    jobs = [await admin.imagine_job(carol, f"while a is off {i}") for i in range(3)]
    for job in jobs:
        await admin.wait_state(job.id, JobState.SUCCEEDED)
    assert a.submitted == [] and len(b.submitted) == 3

    # Drain b while it holds a job: the job finishes there, new ones go to a.
    b.behaviour.hang_next = 1
    hung = await admin.imagine_job(carol, "hangs on b")
    await admin.wait_state(hung.id, JobState.SUBMITTED)
    row = (await admin.ok("POST", "/workers/instant-b/drain"))["worker"]
    assert row["state"] == "draining" and row["in_flight"] == 1
    await admin.ok("POST", "/workers/instant-a/enable")
    after = await admin.imagine_job(carol, "after the drain")
    await admin.wait_state(after.id, JobState.SUCCEEDED)
    assert a.submitted == [after.id]
    status = await admin.ok("GET", "/status")
    assert [w["state"] for w in status["workers"]] == ["ready", "draining"]
    row = (await admin.ok("POST", "/workers/instant-b/enable"))["worker"]
    assert row["state"] == "ready"

    status, body = await admin.call("POST", "/workers/nope/disable")
    assert status == 404 and "instant-a, instant-b" in body["message"]
    # With several processes, a worker whose lease another process (or none) holds is not
    # steered from here: a clear refusal, not a crash.
    admin.world.app.pool.set_elsewhere("instant-a", True)
    status, body = await admin.call("POST", "/workers/instant-a/enable")
    assert status == 409 and body["error"] == "worker_not_running", body
    admin.world.app.pool.set_elsewhere("instant-a", False)
    status, body = await admin.call("POST", "/workers/instant-a/reboot")
    assert status == 404 and body["error"] == "unknown_action"


async def test_ban_refuses_imagine_until_unbanned(make_admin: AdminFactory) -> None:
    admin = await make_admin()
    dave = admin.world.member("dave")
    user = await admin.ok(
        "PATCH", f"/users/{dave.id}", {"ban": True, "ban_hours": 2, "ban_reason": "spam"}
    )
    assert user["banned"] is True and user["ban_reason"] == "spam"
    assert user["banned_until"] != "forever"
    reply = await admin.imagine(dave, "let me in")
    assert reply.flags & 64 and "cannot request images" in reply.content
    assert await admin.world.app.store.depth() == 0
    metrics = await admin.call("GET", "/metrics")
    assert 'gouache_refusals_total{reason="user_blocked"} 1.0' in metrics[1]

    user = await admin.ok("PATCH", f"/users/{dave.id}", {"unban": True})
    assert user["banned"] is False and user["banned_until"] is None
    job = await admin.imagine_job(dave, "thank you")
    await admin.wait_state(job.id, JobState.SUCCEEDED)

    forever = await admin.ok("PATCH", f"/users/{dave.id}", {"ban": True})
    assert forever["banned_until"] == "forever" and forever["ban_reason"] == "banned by the owner"


async def test_limit_and_tier_overrides_are_honoured(make_admin: AdminFactory) -> None:
    admin = await make_admin(daily_limit=100)
    erin = admin.world.member("erin")
    user = await admin.ok("PATCH", f"/users/{erin.id}", {"daily_limit": 1, "tier": "vip"})
    assert user["daily_limit"] == 1 and user["effective_limit"] == 1
    assert user["effective_tier"] == "vip" and user["tiers"] == ["default", "vip"]
    first = await admin.imagine_job(erin, "only one")
    assert first.tier == "vip" and first.weight == 3  # the override beats her (lack of) roles
    await admin.wait_state(first.id, JobState.SUCCEEDED)
    refused = await admin.imagine(erin, "one more")
    assert refused.flags & 64 and "1 of your 1 images" in refused.content
    user = await admin.ok("GET", f"/users/{erin.id}")
    assert user["used_today"] == 1

    # Clearing the overrides (null) brings back the defaults.
    user = await admin.ok("PATCH", f"/users/{erin.id}", {"daily_limit": None, "tier": None})
    assert user["effective_limit"] == 100 and user["effective_tier"] == "default"
    second = await admin.imagine_job(erin, "now a second")
    assert second.tier == "default"

    for body, fragment in (
        ({"tier": "gold"}, "Unknown tier 'gold' (known: default, vip)"),
        ({"daily_limit": -1}, "daily_limit"),
        ({"colour": "red"}, "colour"),
        ({"ban": True, "unban": True}, "not both"),
        ({"ban_hours": 3}, "go with ban"),
    ):
        status, error = await admin.call("PATCH", f"/users/{erin.id}", body)
        assert status == 400 and fragment in error["message"], (body, error)
    status, error = await admin.call("GET", "/users/abc")
    assert status == 400 and "number" in error["message"]


async def test_cancel_stops_the_worker_and_refunds(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 1})
    worker = admin.workers["instant-a"]
    worker.behaviour.hang_next = 1
    frank = admin.world.member("frank")
    running = await admin.imagine_job(frank, "never ends")
    await admin.wait_state(running.id, JobState.SUBMITTED)
    queued = await admin.imagine_job(frank, "waits behind it")
    store = admin.world.app.store
    assert (await store.quota(frank.id, daily_limit=100)).used == 2

    data = await admin.ok("POST", f"/jobs/{running.id}/cancel")
    assert data["job"]["state"] == "canceled" and data["refunded"] is True
    assert "interaction_token" not in data["job"]
    await asyncio.wait_for(worker.cancel_seen.wait(), 5)
    assert worker.cancelled == [running.id]
    # The freed slot goes to the queued job, which succeeds; only it is charged.
    await admin.wait_state(queued.id, JobState.SUCCEEDED)
    assert (await store.quota(frank.id, daily_limit=100)).used == 1

    status, error = await admin.call("POST", f"/jobs/{running.id}/cancel")
    assert status == 409 and "already ended (canceled)" in error["message"]
    status, error = await admin.call("POST", "/jobs/" + "0" * 32 + "/cancel")
    assert status == 404 and error["error"] == "job_not_found"


async def test_retry_queues_a_copy_and_charges_once(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 1}, daily_limit=1)
    worker = admin.workers["instant-a"]
    worker.behaviour.fail_next = 1
    gina = admin.world.member("gina")
    failed = await admin.imagine_job(gina, "a stubborn cat --ar 3:2")
    await admin.wait_state(failed.id, JobState.FAILED)
    store = admin.world.app.store
    assert (await store.quota(gina.id, daily_limit=1)).used == 0  # refunded

    data = await admin.ok("POST", f"/jobs/{failed.id[:10]}/retry")  # a prefix is enough
    assert data["retry_of"] == failed.id
    new = data["job"]
    assert new["id"] != failed.id and new["meta"]["retry_of"] == failed.id
    assert new["prompt"] == failed.prompt and new["params"]["aspect"] == [3, 2]
    done = await admin.wait_state(new["id"], JobState.SUCCEEDED)
    assert done.user_id == gina.id and done.channel_id == failed.channel_id
    # A new message in the channel shows the retried job's result.
    await admin.world.wait(
        lambda m: (
            embed_title(m) == "Done" and bool(m.attachments) and new["id"][:8] in str(m.embeds)
        )
    )
    assert (await store.quota(gina.id, daily_limit=1)).used == 1

    # Her limit (1) is used up, yet the owner's retry still runs; a ban stops it.
    worker.behaviour.fail_next = 1
    gina2 = admin.world.member("gina2")
    failed2 = await admin.imagine_job(gina2, "fails too")
    await admin.wait_state(failed2.id, JobState.FAILED)
    await admin.ok("PATCH", f"/users/{gina2.id}", {"ban": True})
    status, error = await admin.call("POST", f"/jobs/{failed2.id}/retry")
    assert status == 409 and "banned" in error["message"]
    status, error = await admin.call("POST", f"/jobs/{done.id}/retry")
    assert status == 409 and "re-roll" in error["message"]


async def test_job_show_and_queue(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 1})
    admin.workers["instant-a"].behaviour.hang_next = 1
    hank, ivy = admin.world.member("hank"), admin.world.member("ivy")
    running = await admin.imagine_job(hank, "first")
    await admin.wait_state(running.id, JobState.SUBMITTED)
    h2 = await admin.imagine_job(hank, "second")
    i1 = await admin.imagine_job(ivy, "ivy's")

    queue = await admin.ok("GET", "/queue")
    assert queue["depth"] == 2
    # Running first; then fair order: ivy has nothing running, so she goes before hank.
    assert [(j["id"], j["position"]) for j in queue["jobs"]] == [
        (running.id, None),
        (i1.id, 0),
        (h2.id, 1),
    ]
    mine = await admin.ok("GET", f"/queue?user={ivy.id}")
    assert mine["depth"] == 1 and [j["id"] for j in mine["jobs"]] == [i1.id]
    status, _ = await admin.call("GET", "/queue?user=x")
    assert status == 400

    shown = (await admin.ok("GET", f"/jobs/{i1.id[:8]}"))["job"]
    assert shown["id"] == i1.id and shown["position"] == 0 and shown["user_id"] == ivy.id
    assert "interaction_token" not in shown
    status, _ = await admin.call("GET", "/jobs/ffffffffff")
    assert status == 404


async def test_metrics_families_after_a_job(make_admin: AdminFactory) -> None:
    admin = await make_admin({"instant-a": 2}, daily_limit=1)
    sandbox = admin.world.sandbox
    jack = admin.world.member("jack")
    # One 429 on the first message edit: discord.py waits and retries it.
    sandbox.fail_route("PATCH", "/webhooks/*", 429, times=1)
    job = await admin.imagine_job(jack, "measured")
    await admin.wait_state(job.id, JobState.SUCCEEDED)
    await admin.world.wait(lambda m: embed_title(m) == "Done" and bool(m.attachments))
    await admin.imagine(jack, "over the limit")

    status, text = await admin.call("GET", "/metrics")
    assert status == 200

    def value(pattern: str) -> float:
        match = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
        assert match, pattern
        return float(match.group(1))

    assert value(r'gouache_jobs_total\{backend="instant",state="succeeded"\}') == 1
    assert value("gouache_job_wait_seconds_count") == 1
    assert value("gouache_job_run_seconds_count") == 1
    assert 0 <= value("gouache_job_run_seconds_sum") < 10
    assert value("gouache_queue_depth") == 0
    assert value(r'gouache_jobs_current\{state="queued"\}') == 0
    assert value(r'gouache_worker_state\{kind="instant",state="ready",worker="instant-a"\}') == 1
    assert value(r'gouache_worker_state\{kind="instant",state="busy",worker="instant-a"\}') == 0
    assert value(r'gouache_worker_capacity\{worker="instant-a"\}') == 2
    assert value(r'gouache_worker_done_today\{worker="instant-a"\}') == 1
    assert value("gouache_discord_rate_limited_total") == 1
    assert value(r'gouache_refusals_total\{reason="quota_exceeded"\}') == 1
    assert "# TYPE gouache_gateway_reconnects_total counter" in text
    assert "# TYPE gouache_worker_latency_seconds gauge" in text
