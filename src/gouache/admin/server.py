"""The owner's HTTP API (aiohttp): status, worker switches, user overrides, jobs, metrics.

Safety:

* it listens on loopback unless told otherwise, and refuses to start on any
  other address without a token;
* with a token, every endpoint — ``/metrics`` included — wants
  ``Authorization: Bearer <token>`` (compared in constant time); Prometheus
  sends one with ``authorization: {credentials: ...}`` in its scrape config;
* without a token (loopback only), requests must name a loopback host in
  their ``Host`` header, so a web page the owner visits cannot reach the API
  through DNS rebinding;
* changes (POST/PATCH) must be ``application/json``, which a browser cannot
  send cross-site without a CORS preflight that this API never answers.

Endpoints (JSON; errors are ``{"error": code, "message": one line}``)::

    GET   /status                     workers (every process), queue, jobs today, errors,
                                      channels gouache cannot deliver in
    POST  /workers/{name}/enable|disable|drain   {"reason": "..."} for disable
    GET   /queue?user=ID              waiting and running jobs, in pop order
    GET   /users/{id}                 overrides, effective tier and limit, quota today
    PATCH /users/{id}                 {"tier", "daily_limit", "ban", "ban_hours", "ban_reason", "unban"}
    GET   /jobs/{id}                  one job (an 8+ character prefix of a recent job works)
    POST  /jobs/{id}/cancel           stop it (on its worker too) and refund its quota
    POST  /jobs/{id}/retry            queue a copy of a job that ended without an image
    GET   /metrics                    Prometheus text format

Cancel goes through the dispatcher, so a job running in this process stops
on its worker at once; one running in another process (shared Redis) is
stopped there when its lease renewal finds it cancelled (within a third of
the lease). Worker switches act on this process's workers; a worker held by
another process answers 409 with that process's name.

Retry: a terminal job never leaves its state (`gouache.jobs.TRANSITIONS`), so
a retry is a new job — same user, prompt, parameters, parent and channel,
``meta.retry_of`` pointing at the old one, a new message in the channel. The
old job was refunded when it failed; the copy reserves quota like any
request, so a user who gets their image pays for it exactly once. The daily
limit and the queue limit do not apply (the owner asked for it); a ban does.
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from gouache.admin.channels_api import ChannelRoutes
from gouache.admin.metrics import Metrics
from gouache.admin.port import ProcessPort
from gouache.admin.status import local_rows, merge_rows
from gouache.config import is_loopback
from gouache.errors import ConfigError, ErrorCode, GouacheError, JobNotFound
from gouache.jobs import Job, JobEvent, JobEventKind, JobState
from gouache.queue.quota import QuotaPolicy
from gouache.storage.base import UserRecord

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FOREVER = datetime(9999, 12, 31, tzinfo=UTC)  # a ban without an end
_TODAY_SCAN = 2000  # newest jobs looked at for "jobs today"
_ERROR_SCAN = 200  # newest failed jobs looked at for "errors in the last hour"
_PREFIX_SCAN = 1000  # newest jobs searched for a job id prefix
_RETRYABLE = frozenset({JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELED})
_LIVE = [s for s in JobState if not s.terminal]


class ApiError(GouacheError):
    """An answer other than 200: HTTP status, stable code, one line for the owner."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


def _host_only(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8765`` → ``::1``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class UserPatch(BaseModel):
    """The body of ``PATCH /users/{id}``; a field left out is left alone, ``null`` clears it."""

    model_config = ConfigDict(extra="forbid")

    tier: str | None = None
    daily_limit: int | None = Field(default=None, ge=0)
    ban: bool = False
    ban_hours: float | None = Field(default=None, gt=0)
    ban_reason: str | None = Field(default=None, max_length=500)
    unban: bool = False


def start_of_day(policy: QuotaPolicy, now: datetime) -> datetime:
    """When the local day of ``now`` began (the last quota reset), DST changes included."""
    # Tomorrow's midnight minus one wall-clock day lands on today's midnight, or
    # on an hour a DST change skipped; the reset after the hour before it is exact.
    approx = (policy.resets_at(now) - timedelta(days=1)).astimezone(UTC)
    return policy.resets_at(approx - timedelta(hours=1))


def job_view(job: Job, position: int | None = None) -> dict[str, Any]:
    """A job as JSON, without the interaction token (a secret for 15 minutes)."""
    data = job.model_dump(mode="json", exclude={"interaction_token"})
    data["position"] = position
    return data


class AdminServer:
    """The admin API of one running process (see the module docstring)."""

    def __init__(  # noqa: PLR0913
        self,
        port: ProcessPort,
        host: str = "127.0.0.1",
        listen_port: int = 8765,
        token: str | SecretStr | None = None,
        *,
        metrics: Metrics | None = None,
        process: str | None = None,
        stats_ttl_s: float = 2.0,
    ) -> None:
        self.proc = port
        self.host = host
        self._port = listen_port
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._token: bytes | None = secret.encode() if secret else None
        self._own_metrics = metrics is None
        self.metrics = metrics or Metrics.for_port(port)
        self.process = process or port.process
        self.stats_ttl_s = stats_ttl_s
        self._stats: tuple[float, dict[str, Any]] | None = None
        self._runner: web.AppRunner | None = None
        self._bound: int | None = None

    def __repr__(self) -> str:
        auth = "token" if self._token else "no token"
        return f"AdminServer({self.host}:{self._bound or self._port}, {auth})"

    @property
    def port(self) -> int:
        """The port actually bound (after `start`; useful with port 0)."""
        return self._bound if self._bound is not None else self._port

    @property
    def url(self) -> str:
        """Where clients reach it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Check the address and token, then listen."""
        if not is_loopback(self.host) and self._token is None:
            raise ConfigError(
                [
                    f"admin.token: required when listening on a non-loopback address "
                    f"({self.host}); set a token or listen on 127.0.0.1"
                ]
            )
        if self._own_metrics:
            await self.metrics.start()
        web_app = web.Application(middlewares=[self._guard])
        r = web_app.router
        r.add_get("/status", self._status)
        r.add_post("/workers/{name}/{action}", self._worker)
        r.add_get("/queue", self._queue)
        r.add_get("/users/{user_id}", self._get_user)
        r.add_patch("/users/{user_id}", self._patch_user)
        r.add_get("/jobs/{job_id}", self._get_job)
        r.add_post("/jobs/{job_id}/cancel", self._cancel_job)
        r.add_post("/jobs/{job_id}/retry", self._retry_job)
        r.add_get("/metrics", self._metrics)
        ChannelRoutes(
            lambda: getattr(self.proc.rules, "channels", None), ApiError, _json_body
        ).install(r)
        runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if self._own_metrics:
                await self.metrics.aclose()
            raise ConfigError(
                [f"admin.listen: cannot listen on {self.host}:{self._port} ({exc.strerror or exc})"]
            ) from None
        self._runner = runner
        self._bound = int(runner.addresses[0][1])
        log.info("admin.started", url=self.url, token=bool(self._token))

    async def aclose(self) -> None:
        """Stop listening; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            if self._own_metrics:
                await self.metrics.aclose()
            log.info("admin.stopped")

    stop = aclose

    # -- guard ------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is None:
            if not is_loopback(_host_only(request.host)):
                return _error(
                    403, ErrorCode.FORBIDDEN_HOST, "This API only answers on a loopback host."
                )
        else:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self._token
            ):
                response = _error(401, ErrorCode.UNAUTHORIZED, "Missing or wrong admin token.")
                response.headers["WWW-Authenticate"] = 'Bearer realm="gouache"'
                return response
        if request.method in ("POST", "PATCH", "PUT", "DELETE"):
            if request.content_type != "application/json":
                return _error(
                    415, ErrorCode.JSON_REQUIRED, "Send the request body as application/json."
                )
            self._stats = None  # a change: the next status reads afresh
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.message)
        except JobNotFound as exc:
            return _error(404, exc.code, exc.message)
        except GouacheError as exc:
            return _error(409, exc.code, exc.message)

    # -- status -----------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Everything `gouache pool status` shows."""
        store = self.proc.store
        local = local_rows(self.proc.pool, self.process)
        remote = [r for r in await store.worker_rows() if r.get("process") != self.process]
        workers = merge_rows(local, remote)
        depth = await store.depth()
        counts = await store.count_by_state()
        stats = await self._scanned_stats(depth)
        today, errors = stats["today"], stats["errors"]
        healthy = {"ready", "busy"}
        return {
            "process": self.process,
            "workers": workers,
            "summary": {
                "ready": sum(1 for w in workers if w["state"] in healthy),
                "total": len(workers),
                "in_flight": sum(int(w["in_flight"]) for w in workers),
                # Healthy workers' slots, plus those a switched-off worker still fills.
                "capacity": sum(
                    int(w["capacity"]) if w["state"] in healthy else int(w["in_flight"])
                    for w in workers
                ),
                "queue_depth": depth,
                "jobs_today": sum(today["by_state"].values()),
                "errors_last_hour": len(errors),
            },
            "queue": {"depth": depth, "by_tier": stats["by_tier"]},
            "in_flight": {
                "this_process": self.proc.in_flight(),
                "all": sum(counts.get(s, 0) for s in JobState if s.active),
            },
            "jobs": {s.value: counts.get(s, 0) for s in _LIVE},
            "jobs_today": today,
            "errors_last_hour": errors[:20],
            # Channels where gouache cannot deliver (this process's view: it saw the refusals).
            "channels": self.proc.unserved_channels(),
        }

    def _now(self) -> datetime:
        return self.proc.now()

    async def _scanned_stats(self, depth: int) -> dict[str, Any]:
        """The figures that read many job records, kept ``stats_ttl_s`` (every watcher shares them).

        A change made through this API drops them, so its effect shows at once.
        """
        now = time.monotonic()
        if self._stats is not None and now - self._stats[0] < self.stats_ttl_s:
            return self._stats[1]
        by_tier: Counter[str] = Counter()
        if depth:
            queued = await self.proc.store.list_jobs(
                states=[JobState.QUEUED], limit=min(depth, 5000)
            )
            by_tier.update(j.tier for j in queued)
        by_state, exact = await self._jobs_today()
        stats = {
            "by_tier": dict(sorted(by_tier.items())),
            "today": {"by_state": by_state, "exact": exact},
            "errors": await self._recent_errors(),
        }
        self._stats = (time.monotonic(), stats)
        return stats

    async def _jobs_today(self) -> tuple[dict[str, int], bool]:
        """Jobs created since local midnight, by state (from the newest ``_TODAY_SCAN`` jobs)."""
        policy = self.proc.rules.policy
        midnight = start_of_day(policy, self._now())
        jobs = await self.proc.store.list_jobs(limit=_TODAY_SCAN)
        counts: Counter[str] = Counter(j.state.value for j in jobs if j.created_at >= midnight)
        exact = len(jobs) < _TODAY_SCAN or jobs[-1].created_at < midnight
        return dict(sorted(counts.items())), exact

    async def _recent_errors(self) -> list[dict[str, Any]]:
        since = self._now() - timedelta(hours=1)
        failed = await self.proc.store.list_jobs(
            states=[JobState.FAILED, JobState.TIMED_OUT], limit=_ERROR_SCAN
        )
        return [
            {
                "job_id": j.id,
                "user_id": j.user_id,
                "worker": j.worker,
                "state": j.state.value,
                "code": j.error_code,
                "message": j.error_message,
                "at": j.finished_at.isoformat() if j.finished_at else None,
            }
            for j in failed
            if (j.finished_at or j.updated_at) >= since
        ]

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.status())

    # -- workers ----------------------------------------------------------------

    async def _worker(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        action = request.match_info["action"]
        if action not in ("enable", "disable", "drain"):
            raise ApiError(404, ErrorCode.UNKNOWN_ACTION, f"Unknown action {action!r}.")
        body = await _json_body(request)
        pool = self.proc.pool
        configured = any(w.name == name for w in pool.workers)
        if not configured or not pool.runs_here(name):
            # Not ours now (another process holds its lease, or none does).
            elsewhere = [r for r in await self.proc.store.worker_rows() if r.get("name") == name]
            if elsewhere:
                raise ApiError(
                    409,
                    ErrorCode.WORKER_ELSEWHERE,
                    f"Worker {name!r} runs in process {elsewhere[0]['process']}; "
                    "use that process's admin API.",
                )
            if configured:
                raise ApiError(
                    409,
                    ErrorCode.WORKER_NOT_RUNNING,
                    f"Worker {name!r} runs in no process right now; try again when one has it.",
                )
            known = ", ".join(w.name for w in pool.workers) or "none"
            raise ApiError(
                404, ErrorCode.WORKER_NOT_FOUND, f"No worker named {name!r} (known: {known})."
            )
        if action == "disable":
            reason = body.get("reason") or "disabled by the owner"
            if not isinstance(reason, str) or len(reason) > 200:
                raise ApiError(
                    400, ErrorCode.BAD_REASON, "The reason must be text of at most 200 characters."
                )
            pool.disable(name, reason)
        elif action == "enable":
            pool.enable(name)
        else:
            pool.drain(name)
        log.info("admin.worker", worker=name, action=action)
        row = next(r for r in local_rows(pool, self.process) if r["name"] == name)
        return web.json_response({"worker": row})

    # -- queue ------------------------------------------------------------------

    async def _queue(self, request: web.Request) -> web.Response:
        user = request.query.get("user")
        user_id = _int(user, "user") if user else None
        store = self.proc.store
        jobs = await store.list_jobs(user_id=user_id, states=_LIVE, limit=1000)
        rows = [job_view(j, await store.position(j.id)) for j in jobs]
        # Running first (oldest first), then waiting in pop order.
        rows.sort(key=lambda r: (r["position"] is not None, r["position"] or 0, r["created_at"]))
        return web.json_response({"depth": await store.depth(user_id), "jobs": rows})

    # -- users ------------------------------------------------------------------

    async def user_view(self, user_id: int) -> dict[str, Any]:
        """A user's overrides and where they stand today (role-granted tiers are not known here)."""
        requests = self.proc.rules
        record = await self.proc.store.get_user(user_id)
        tier = requests.tier_for((), record.tier)
        limit = requests.policy.limit_for(
            tier_limit=tier.daily_limit, user_limit=record.daily_limit
        )
        quota = await self.proc.store.quota(user_id, daily_limit=limit)
        pending = await self.proc.store.list_jobs(user_id=user_id, states=_LIVE, limit=1000)
        now = self._now()
        return {
            "user_id": user_id,
            "tier": record.tier,
            "daily_limit": record.daily_limit,
            "effective_tier": tier.name,
            "effective_limit": limit,
            "used_today": quota.used,
            "resets_at": quota.resets_at.isoformat(),
            "banned": record.banned(now),
            "banned_until": (
                None
                if not record.banned(now) or record.banned_until is None
                else (
                    "forever" if record.banned_until >= FOREVER else record.banned_until.isoformat()
                )
            ),
            "ban_reason": record.ban_reason if record.banned(now) else None,
            "strikes": record.strikes,
            "pending_jobs": len(pending),
            "tiers": [t.name for t in requests.tiers],
        }

    async def _get_user(self, request: web.Request) -> web.Response:
        user_id = _int(request.match_info["user_id"], "user id")
        return web.json_response(await self.user_view(user_id))

    async def _patch_user(self, request: web.Request) -> web.Response:
        user_id = _int(request.match_info["user_id"], "user id")
        try:
            patch = UserPatch.model_validate(await _json_body(request))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ApiError(400, ErrorCode.BAD_REQUEST, f"{where}: {first['msg']}") from None
        given = patch.model_fields_set
        if patch.ban and patch.unban:
            raise ApiError(400, ErrorCode.BAD_REQUEST, "Ban or unban, not both.")
        if ("ban_hours" in given or "ban_reason" in given) and not patch.ban:
            raise ApiError(400, ErrorCode.BAD_REQUEST, "ban_hours and ban_reason go with ban.")
        names = [t.name for t in self.proc.rules.tiers]
        if patch.tier is not None and patch.tier not in names:
            raise ApiError(
                400,
                ErrorCode.UNKNOWN_TIER,
                f"Unknown tier {patch.tier!r} (known: {', '.join(names)}).",
            )
        record = await self.proc.store.get_user(user_id)
        changes: dict[str, Any] = {}
        if "tier" in given:
            changes["tier"] = patch.tier
        if "daily_limit" in given:
            changes["daily_limit"] = patch.daily_limit
        if patch.ban:
            hours = patch.ban_hours
            changes["banned_until"] = (
                FOREVER if hours is None else self._now() + timedelta(hours=hours)
            )
            changes["ban_reason"] = patch.ban_reason or "banned by the owner"
        if patch.unban:
            changes.update(banned_until=None, ban_reason=None, strikes=0)
        if changes:
            fields = {
                name: changes.get(name, getattr(record, name))
                for name in ("tier", "daily_limit", "banned_until", "ban_reason", "strikes")
            }
            await self.proc.store.put_user(UserRecord(user_id=user_id, **fields))
            log.info("admin.user_updated", user_id=user_id, fields=sorted(changes))
        return web.json_response(await self.user_view(user_id))

    # -- jobs -------------------------------------------------------------------

    async def _find_job(self, ref: str) -> Job:
        ref = ref.strip().lower()
        job = await self.proc.store.get(ref)
        if job is not None:
            return job
        if 8 <= len(ref) < 32:
            matches = [
                j
                for j in await self.proc.store.list_jobs(limit=_PREFIX_SCAN)
                if j.id.startswith(ref)
            ]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ApiError(
                    409,
                    ErrorCode.AMBIGUOUS_JOB,
                    f"{ref!r} matches {len(matches)} jobs; give more of the id.",
                )
        raise ApiError(404, ErrorCode.JOB_NOT_FOUND, f"No job {ref!r}.")

    async def _get_job(self, request: web.Request) -> web.Response:
        job = await self._find_job(request.match_info["job_id"])
        position = await self.proc.store.position(job.id)
        return web.json_response({"job": job_view(job, position)})

    async def _cancel_job(self, request: web.Request) -> web.Response:
        job = await self._find_job(request.match_info["job_id"])
        if job.state.terminal:
            raise ApiError(
                409, ErrorCode.JOB_FINISHED, f"Job {job.id} already ended ({job.state.value})."
            )
        job = await self.proc.cancel(job.id, reason="Cancelled by the owner.")
        log.info("admin.job_cancelled", job_id=job.id, user_id=job.user_id, state=job.state.value)
        return web.json_response({"job": job_view(job), "refunded": job.state is JobState.CANCELED})

    async def _retry_job(self, request: web.Request) -> web.Response:
        old = await self._find_job(request.match_info["job_id"])
        if old.state not in _RETRYABLE:
            what = (
                "succeeded (use its re-roll button)"
                if old.state is JobState.SUCCEEDED
                else "not finished"
            )
            raise ApiError(
                409,
                ErrorCode.NOT_RETRYABLE,
                f"Job {old.id} {what}; only a job that ended without an image can be retried.",
            )
        user = await self.proc.store.get_user(old.user_id)
        if user.banned(self._now()):
            raise ApiError(
                409, ErrorCode.USER_BLOCKED, f"User {old.user_id} is banned; unban them first."
            )
        copy = Job(
            user_id=old.user_id,
            guild_id=old.guild_id,
            channel_id=old.channel_id,
            action=old.action,
            prompt=old.prompt,
            params=old.params,
            parent_id=old.parent_id,
            index=old.index,
            backend=old.backend,
            tier=old.tier,
            weight=old.weight,
            cost=old.cost,
            locale=old.locale,
            meta={**old.meta, "retry_of": old.id},
        )
        # The owner asked: the daily and queue limits do not apply, but the quota is reserved.
        result = await self.proc.store.enqueue(copy, daily_limit=2**31 - 1, max_queued=None)
        job = result.job
        # Delivery posts a new message in the channel when it sees the job.
        self.proc.bus.publish(JobEvent(job_id=job.id, kind=JobEventKind.STATE, state=job.state))
        log.info("admin.job_retried", job_id=job.id, retry_of=old.id, user_id=job.user_id)
        return web.json_response({"job": job_view(job, result.position), "retry_of": old.id})

    # -- metrics ----------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _error(status: int, code: ErrorCode, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _int(value: str, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ApiError(
            400, ErrorCode.BAD_REQUEST, f"The {what} must be a number, not {value!r}."
        ) from None
    if not 0 <= number < 2**63:  # Discord snowflakes are 64-bit
        raise ApiError(400, ErrorCode.BAD_REQUEST, f"The {what} {value!r} is out of range.")
    return number


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, ErrorCode.BAD_JSON, "The body is not valid JSON.") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, ErrorCode.BAD_JSON, "The body must be a JSON object.")
    return body
