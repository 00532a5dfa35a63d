"""The Discord bot (discord.py 2.7 app commands): /imagine, /cancel, /queue, /quota, /history, /pool.

A thin layer: each handler builds a `RequestContext`, calls `Requests`, and
answers at once (Discord allows 3 s). Errors a member caused are answered
ephemerally with the error's own message; nothing is lost, nothing is queued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import discord
import structlog
from discord import app_commands

from gouache.bot import image_commands
from gouache.bot.channel_commands import build_commands, model_suggestions, requester_only_refusal
from gouache.bot.clicks import Click, ClickRules
from gouache.bot.delivery import Delivery
from gouache.bot.describe_view import DescribeButton
from gouache.bot.i18n import t
from gouache.bot.render import LiveInfo, clip, job_embed
from gouache.bot.result_buttons import ResultButtonItem, open_modal
from gouache.bot.service import Receipt, RequestContext, Requests
from gouache.bot.views import OPS, JobButton, progress_view
from gouache.errors import GouacheError
from gouache.jobs import Action
from gouache.pool.base import WorkerSnapshot

log = structlog.get_logger(__name__)

SnapshotFn = Callable[[], list[WorkerSnapshot]]


class GouacheBot(discord.Client):
    """The member-facing bot."""

    def __init__(  # noqa: PLR0913
        self,
        requests: Requests,
        *,
        application_id: int,
        owner_ids: Iterable[int] = (),
        guild_ids: Iterable[int] = (),
        pool_snapshot: SnapshotFn | None = None,
        delivery: Delivery | None = None,
        backends: Iterable[str] = (),
        **client_options: Any,
    ) -> None:
        super().__init__(
            intents=discord.Intents(guilds=True), application_id=application_id, **client_options
        )
        self.requests = requests
        self.owner_ids = frozenset(owner_ids)
        self.guild_ids = list(guild_ids)
        self.pool_snapshot = pool_snapshot
        self.delivery = delivery
        self.accepting = True
        self.tree = app_commands.CommandTree(self)
        self.add_dynamic_items(JobButton, DescribeButton, ResultButtonItem)
        self.clicks = ClickRules(requests)
        self._register(sorted(set(backends)))
        if requests.channels is not None:  # /settings and /preferences
            for extra in build_commands(self):
                self.tree.add_command(extra)

    async def setup_hook(self) -> None:
        """Sync the commands: to the configured guilds at once, else globally."""
        if self.guild_ids:
            for gid in self.guild_ids:
                guild = discord.Object(id=gid)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()
        log.info("bot.commands_synced", guilds=self.guild_ids or "global")

    # -- context -------------------------------------------------------------

    def context(self, interaction: discord.Interaction[Any]) -> RequestContext:
        """Who is asking, from an interaction."""
        user = interaction.user
        roles = (
            frozenset(r.id for r in user.roles) if isinstance(user, discord.Member) else frozenset()
        )
        return RequestContext(
            user_id=user.id,
            role_ids=roles,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            locale=str(interaction.locale),
            interaction_token=interaction.token,
            interaction_at=interaction.created_at,
            is_owner=user.id in self.owner_ids,
            app_permissions=(
                interaction.app_permissions.value if interaction.guild_id is not None else None
            ),
            nsfw=bool(getattr(interaction.channel, "nsfw", False)),
            attachment_size_limit=getattr(interaction, "filesize_limit", None),
        )

    async def _refuse(self, interaction: discord.Interaction[Any], message: str) -> None:
        await interaction.response.send_message(clip(message, 2000), ephemeral=True)

    async def _answer_receipt(
        self, interaction: discord.Interaction[Any], receipt: Receipt
    ) -> None:
        job = receipt.job
        info = LiveInfo(
            position=receipt.position,
            eta_s=receipt.eta_s,
            quota_remaining=receipt.quota.remaining,
            quota_limit=receipt.quota.limit,
        )
        try:
            response = await interaction.response.send_message(
                embed=job_embed(job, info), view=progress_view(job)
            )
        except Exception as exc:
            # Discord refused or lost the answer (too late, or a 5xx): the member
            # was told "This interaction failed", and the interaction's webhook is
            # dead. A job still under way is withdrawn (not run, not charged); one
            # that already finished is posted in the channel: the member paid for it.
            log.warning("job.unanswered", job_id=job.id, user_id=job.user_id, error=str(exc))
            await self.requests.unanswered(job.id)
            if self.delivery is not None:
                self.delivery.mark(job.id, final=True, soon=True)
            raise
        message_id = getattr(response, "message_id", None)
        if message_id is not None:
            await self.requests.store.update(job.id, message_id=message_id)
        if self.delivery is not None:
            self.delivery.track(job.id)
            self.delivery.mark(job.id)
        log.info(
            "job.enqueued",
            job_id=job.id,
            user_id=job.user_id,
            position=receipt.position,
            action=job.action.value,
            tier=job.tier,
        )

    # -- commands --------------------------------------------------------------

    def _register(self, backends: list[str]) -> None:
        backend_choices = [app_commands.Choice(name=b, value=b) for b in backends]

        @app_commands.command(name="imagine", description="Create images from a prompt")
        @app_commands.describe(
            prompt="What to draw; Midjourney-style --params are understood",
            aspect="Aspect ratio such as 16:9",
            backend="Which kind of worker to use",
            negative="Things to leave out, comma-separated",
            seed="A seed for repeatable results",
            model="Model: Midjourney v7, v6.1, niji, a ComfyUI workflow, checkpoint or LoRA",
            image="An image prompt: the picture to start from",
            style_ref="A style reference (like --sref)",
            character_ref="A character reference (like --cref)",
        )
        @app_commands.choices(backend=backend_choices)
        async def imagine(  # noqa: PLR0913
            interaction: discord.Interaction[Any],
            prompt: app_commands.Range[str, 1, 4000],
            aspect: str | None = None,
            backend: str | None = None,
            negative: str | None = None,
            seed: app_commands.Range[int, 0, 4294967295] | None = None,
            model: str | None = None,
            image: discord.Attachment | None = None,
            style_ref: discord.Attachment | None = None,
            character_ref: discord.Attachment | None = None,
        ) -> None:
            ctx = self.context(interaction)
            if not self.accepting:
                await self._refuse(interaction, t(ctx.locale, "shutting_down"))
                return
            try:
                receipt = await self.requests.imagine(
                    ctx,
                    prompt,
                    aspect=aspect,
                    backend=backend,
                    negative=negative,
                    seed=seed,
                    model=model,
                    images=image_commands.attached(image, style_ref, character_ref),
                )
            except GouacheError as exc:
                await self._refuse(interaction, str(exc))
                return
            await self._answer_receipt(interaction, receipt)

        imagine.autocomplete("model")(self._suggest_models)

        @app_commands.command(name="cancel", description="Cancel one of your jobs")
        @app_commands.describe(
            job="The job id (the 8 characters under the message); default: your latest"
        )
        async def cancel(interaction: discord.Interaction[Any], job: str | None = None) -> None:
            ctx = self.context(interaction)
            await self._cancel(interaction, ctx, job)

        @app_commands.command(name="queue", description="Your jobs and their places in the queue")
        async def queue(interaction: discord.Interaction[Any]) -> None:
            ctx = self.context(interaction)
            rows = await self.requests.pending(ctx)
            if not rows:
                await self._refuse(interaction, t(ctx.locale, "no_jobs"))
                return
            lines = []
            for job, position in rows[:20]:
                where = (
                    f"#{position + 1}" if position is not None else t(ctx.locale, job.state.value)
                )
                lines.append(f"`{job.id[:8]}` {where} — {clip(job.prompt, 60)}")
            await self._refuse(interaction, "\n".join(lines))

        @app_commands.command(name="quota", description="How many images you have left today")
        async def quota(interaction: discord.Interaction[Any]) -> None:
            ctx = self.context(interaction)
            status = await self.requests.quota(ctx)
            await self._refuse(
                interaction,
                t(
                    ctx.locale,
                    "quota_status",
                    used=status.used,
                    limit=status.limit,
                    remaining=status.remaining,
                    reset=int(status.resets_at.timestamp()),
                ),
            )

        @app_commands.command(name="history", description="Your latest images")
        async def history(interaction: discord.Interaction[Any]) -> None:
            ctx = self.context(interaction)
            jobs = await self.requests.history(ctx)
            if not jobs:
                await self._refuse(interaction, t(ctx.locale, "history_empty"))
                return
            lines = [f"`{j.id[:8]}` {j.action.value} — {clip(j.prompt, 80)}" for j in jobs]
            await self._refuse(interaction, "\n".join(lines))

        @app_commands.command(name="pool", description="Image workers and their state (owner only)")
        async def pool(interaction: discord.Interaction[Any]) -> None:
            ctx = self.context(interaction)
            if not ctx.is_owner or self.pool_snapshot is None:
                await self._refuse(interaction, t(ctx.locale, "owner_only"))
                return
            rows = self.pool_snapshot()
            lines = [
                f"{r.name:<16} {r.kind:<10} {r.state.value:<11} {r.in_flight}/{r.capacity}"
                f" done {r.done_today:<4} {(r.last_error or r.reason or '')[:40]}"
                for r in rows
            ]
            await self._refuse(
                interaction, "```\n" + "\n".join(lines or ["(no workers)"]) + "\n```"
            )

        commands: list[app_commands.Command[Any, Any, Any]] = [
            imagine,
            *image_commands.commands(self, backend_choices),
            cancel,
            queue,
            quota,
            history,
            pool,
        ]
        for command in commands:
            self.tree.add_command(command)

    async def _suggest_models(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        """Autocomplete of ``/imagine model:`` (answered with callback type 8, at most 25)."""
        return await model_suggestions(self, interaction, current)

    async def _cancel(
        self, interaction: discord.Interaction[Any], ctx: RequestContext, job_ref: str | None
    ) -> None:
        try:
            job_id = await self._resolve(ctx, job_ref)
            if job_id is None:
                await self._refuse(interaction, t(ctx.locale, "no_jobs"))
                return
            job = await self.requests.cancel(ctx, job_id)
        except GouacheError as exc:
            await self._refuse(interaction, str(exc))
            return
        key = (
            "cancelled_ok"
            if job.state.value == "canceled" and job.error_code == "canceled"
            else "already_over"
        )
        await self._refuse(interaction, t(ctx.locale, key))

    async def _resolve(self, ctx: RequestContext, job_ref: str | None) -> str | None:
        """A full job id from an 8-character prefix (among the member's jobs) or the latest."""
        if job_ref is None:
            latest = await self.requests.latest_cancellable(ctx)
            return latest.id if latest else None
        ref = job_ref.strip().lower()
        if len(ref) == 32:
            return ref
        for job, _ in await self.requests.pending(ctx):
            if job.id.startswith(ref):
                return job.id
        return ref  # let the store say it does not exist

    # -- buttons -----------------------------------------------------------------

    async def on_job_button(
        self, interaction: discord.Interaction[Any], op: str, job_id: str, index: int | None
    ) -> None:
        """A click on U1–U4, V1–V4, re-roll or cancel."""
        ctx = self.context(interaction)
        refusal = await requester_only_refusal(self.requests, ctx, op, job_id)
        if refusal is not None:
            await self._refuse(interaction, refusal)
            return
        if op == "x":
            await self._cancel(interaction, ctx, job_id)
            return

        if not self.accepting:
            await self._refuse(interaction, t(ctx.locale, "shutting_down"))
            return
        action = cast(Action, OPS[op])
        asking = await self.clicks.asking_legacy(job_id, action, index)
        if asking is not None:  # V/🔄 of a Remix account: the member is asked first
            await self.on_result_button(interaction, job_id, asking)
            return
        try:
            receipt = await self.requests.follow_up(ctx, job_id, action, index)
        except GouacheError as exc:
            await self._refuse(interaction, str(exc))
            return
        await self._answer_receipt(interaction, receipt)

    async def on_result_button(
        self, interaction: discord.Interaction[Any], job_id: str, number: int
    ) -> None:
        """A click on one of a result's own buttons (`gouache.bot.clicks`): refuse, ask, or queue."""
        ctx = self.context(interaction)
        refusal = await requester_only_refusal(self.requests, ctx, "b", job_id)
        if refusal is not None:
            await self._refuse(interaction, refusal)
            return
        if not self.accepting:
            await self._refuse(interaction, t(ctx.locale, "shutting_down"))
            return
        try:
            click = await self.clicks.check_click(ctx, job_id, number)
        except GouacheError as exc:
            await self._refuse(interaction, str(exc))
            return
        if click.ask is not None:
            # A modal must be the first answer, within Discord's 3 s: nothing is queued yet.
            await interaction.response.send_modal(
                open_modal(click, ctx.locale, self._click_submitted)
            )
            return
        await self._click_submitted(interaction, click, None)

    async def _click_submitted(
        self, interaction: discord.Interaction[Any], click: Click, value: str | None
    ) -> None:
        ctx = self.context(interaction)
        try:
            receipt = await self.clicks.queue_click(ctx, click, value)
        except GouacheError as exc:
            await self._refuse(interaction, str(exc))
            return
        await self._answer_receipt(interaction, receipt)

    async def on_describe_button(
        self, interaction: discord.Interaction[Any], job_id: str, index: int | None
    ) -> None:
        """A click on 1–4 or "Imagine all" under a /describe result."""
        refusal = await requester_only_refusal(
            self.requests, self.context(interaction), "d", job_id
        )
        if refusal is not None:
            await self._refuse(interaction, refusal)
            return
        await image_commands.on_describe_button(self, interaction, job_id, index)
