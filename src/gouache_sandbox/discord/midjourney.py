"""A stand-in for the Midjourney bot, following docs/protocols.md, "Midjourney through a user account"."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

from gouache_sandbox.discord import midjourney_inputs as inputs
from gouache_sandbox.discord import mjeffects, mjimage, payloads
from gouache_sandbox.discord.mjbuttons import (
    REMIXABLE,
    Press,
    content_line,
    grid_components,
    modal_for,
    read_press,
    settings_components,
    single_components,
    zoom_of,
)
from gouache_sandbox.discord.modals import PendingModal
from gouache_sandbox.discord.state import JSON, Attachment, Interaction, Message, SandboxState, User

log = structlog.get_logger(__name__)

APPLICATION_ID = 936929561302675456
IMAGINE_COMMAND_ID = 938956540159881230
SETTINGS_COMMAND_ID = 1000223472262578207
#: The Niji bot (anime models): a second application the same accounts drive the same way.
NIJI_APPLICATION_ID = 1022952195194359889
NIJI_IMAGINE_COMMAND_ID = 1023054140580057099
INITIAL_VERSION = 1237876415471554623
RED = 16711680
QUEUED_COLOR = 16239475

ErrorKind = Literal[
    "banned_prompt",
    "invalid_parameter",
    "invalid_prompt",
    "invalid_link",
    "queue_full",
    "action_needed",
    "credits_exhausted",
    "blocked",
    "subscription_required",
    "subscription_paused",
    "plan_cancelled",
    "pending_mod_message",
    "output_filtered",
]

#: Error embeds as Midjourney words them (title, description).
ERRORS: dict[str, tuple[str, str]] = {
    "banned_prompt": (
        "Banned prompt detected",
        "Sorry! Our AI moderators feel your prompt might be against our community standards.",
    ),
    "invalid_parameter": ("Invalid parameter", "Invalid parameter"),
    "invalid_prompt": ("Invalid prompt", "Your prompt could not be parsed."),
    "invalid_link": ("Invalid link", "The image link in your prompt could not be loaded."),
    "queue_full": (
        "Queue full",
        "You can have up to {max_queued} jobs queued at once. Please wait for a job to finish.",
    ),
    "action_needed": (
        "Action needed to continue",
        "Please confirm you are a human to keep using Midjourney.",
    ),
    "credits_exhausted": (
        "Credits exhausted",
        "You have run out of fast hours. Switch to /relax or buy more hours.",
    ),
    "blocked": ("Blocked", "You have been blocked from accessing Midjourney."),
    "subscription_required": (
        "Subscription required",
        "To use Midjourney you need an active subscription.",
    ),
    "subscription_paused": ("Subscription paused", "Your subscription is paused."),
    "plan_cancelled": ("Plan Cancelled", "Your plan has been cancelled."),
    "pending_mod_message": ("Pending mod message", "You have a message from the moderators."),
    "output_filtered": (
        "Request cancelled due to output filters",
        "The generated images were blocked by our filters.",
    ),
}

KNOWN_PARAMS = {
    "ar",
    "aspect",
    "v",
    "version",
    "niji",
    "q",
    "quality",
    "s",
    "stylize",
    "c",
    "chaos",
    "no",
    "seed",
    "style",
    "tile",
    "w",
    "weird",
    "r",
    "repeat",
    "iw",
    "sref",
    "cref",
    "raw",
    "relax",
    "fast",
    "turbo",
    "p",
    "sw",
    "cw",
    "stop",
    "draft",
}
VERSIONS = {"1", "2", "3", "4", "5", "5.0", "5.1", "5.2", "6", "6.0", "6.1", "7"}
MARKER = re.compile(r"mjfault:([a-z_]+)")


@dataclass
class MidjourneySettings:
    """How the stand-in behaves; tests make it fast and change limits."""

    progress_steps: tuple[int, ...] = (15, 31, 46, 62, 78, 93)
    step_delay: float = 0.5
    max_concurrent: int = 3
    max_queued: int = 10
    banned_words: set[str] = field(default_factory=lambda: {"bannedword"})
    tile_size: int = 128
    mode: str = "fast"
    #: Send error embeds as ephemeral messages (seen only by the invoking account).
    ephemeral_errors: bool = False


@dataclass
class Job:
    """One Midjourney job: an imagine, variation, reroll or upscale."""

    hash: str
    kind: Literal["imagine", "variation", "reroll", "upscale", "blend", "describe"]
    prompt: str
    user: User
    channel_id: int
    interaction: Interaction
    index: int = 0
    parent: Job | None = None
    status: Literal["queued", "running", "done", "failed"] = "queued"
    progress_message_id: int | None = None
    result_message_id: int | None = None
    nonce_used: bool = False
    #: The button pressed (None for /imagine), and whether a Remix form changed the prompt.
    press: Press | None = None
    remix: bool = False
    #: The result image (what later buttons act on).
    png: bytes | None = None
    inputs: list[bytes] = field(default_factory=list)  # image prompts / blend / describe images
    aspect: tuple[int, int] = (1, 1)  # a blend's dimensions
    input_url: str = ""  # the described image


@dataclass
class _Account:
    running: int = 0
    waiting: deque[Job] = field(default_factory=deque)
    fault: str | None = None
    fail_next: deque[str] = field(default_factory=deque)
    fail_running: deque[str] = field(default_factory=deque)
    remix: bool = False
    #: Forms open in front of this account: modal custom id → (press, parent job).
    forms: dict[str, tuple[Press, Job]] = field(default_factory=dict)


def mjimage_size(png: bytes) -> tuple[int, int]:
    """Width and height of a PNG."""
    img = mjeffects.load(png)
    return img.width, img.height


class _JobStopped(Exception):
    """A running job ended with an error embed (see `MidjourneyStandIn.fail_next_run`)."""


class ParamError(ValueError):
    """A prompt parameter Midjourney would reject."""


def normalize_prompt(prompt: str) -> str:
    """Midjourney's rewrite: em/en dashes become ``--``, whitespace collapses."""
    prompt = prompt.replace("—", "--").replace("–", "--")
    return " ".join(prompt.split())


def check_params(prompt: str) -> None:
    """Raise :class:`ParamError` for parameters Midjourney rejects."""
    parts = prompt.split("--")[1:]
    unknown: list[str] = []
    for part in parts:
        words = part.split()
        if not words:
            continue
        name, args = words[0].lower(), words[1:]
        if name not in KNOWN_PARAMS:
            unknown.append(f"--{name}")
            continue
        value = args[0] if args else ""
        if name in ("ar", "aspect"):
            m = re.fullmatch(r"(\d+):(\d+)", value)
            if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
                raise ParamError(f"Invalid aspect ratio: `{value}`")
            w, h = int(m.group(1)), int(m.group(2))
            if max(w / h, h / w) > 4:
                raise ParamError(f"Aspect ratio `{value}` is out of range")
        elif name in ("v", "version") and value not in VERSIONS:
            raise ParamError(f"Invalid value for `--{name}`: `{value}`")
        elif name in ("c", "chaos", "s", "stylize", "w", "weird"):
            limit = {"c": 100, "chaos": 100, "s": 1000, "stylize": 1000, "w": 3000, "weird": 3000}[
                name
            ]
            if not value.isdigit() or int(value) > limit:
                raise ParamError(f"Invalid value for `--{name}`: `{value}` (0–{limit})")
    if unknown:
        raise ParamError(f"Unrecognized parameter(s): `{' '.join(unknown)}`")


class MidjourneyStandIn:
    """The Midjourney bot inside the sandbox: answers /imagine and the U/V/reroll buttons."""

    def __init__(  # noqa: PLR0913
        self,
        state: SandboxState,
        *,
        base_url: Callable[[], str],
        app_id: int = APPLICATION_ID,
        command_id: int = IMAGINE_COMMAND_ID,
        name: str = "Midjourney Bot",
        open_modal: Callable[[Interaction, PendingModal], None] | None = None,
    ) -> None:
        self.state = state
        self._open_modal = open_modal
        self._base_url = base_url
        self.settings = MidjourneySettings()
        self.app_id, self.command_id = app_id, command_id
        app, self.token = state.new_application(name, app_id=app_id)
        self.application = app
        self.bot: User = app.bot
        self.jobs: dict[str, Job] = {}
        self._accounts: dict[int, _Account] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._go = asyncio.Event()
        self._go.set()
        self._register_commands()
        inputs.register_commands(state, APPLICATION_ID, state.ids.next)

    def _register_commands(self) -> None:
        from gouache_sandbox.discord.state import Command

        cmd = Command(
            id=self.command_id,
            application_id=self.app_id,
            name="imagine",
            description="Create images with Midjourney",
            options=[
                {
                    "type": 3,
                    "name": "prompt",
                    "description": "The prompt to imagine",
                    "required": True,
                }
            ],
            version=INITIAL_VERSION,
        )
        self.state.commands[cmd.id] = cmd
        settings = Command(
            id=SETTINGS_COMMAND_ID if self.app_id == APPLICATION_ID else self.state.ids.next(),
            application_id=self.app_id,
            name="settings",
            description="View and adjust your personal settings.",
            options=[],
            version=INITIAL_VERSION,
        )
        self.state.commands[settings.id] = settings

    # -- lifecycle and controls ------------------------------------------------------------

    async def start(self) -> None:
        """Begin answering interactions addressed to the Midjourney application."""
        self.state.app_handlers[self.app_id] = self._on_interaction

    async def aclose(self) -> None:
        """Stop answering and cancel running jobs."""
        self.state.app_handlers.pop(self.app_id, None)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def version(self) -> int:
        """The /imagine command's current version."""
        return self.state.commands[self.command_id].version

    def republish(self) -> int:
        """Publish a new /imagine version (stale versions now fail with 50035); returns it."""
        new = self.state.ids.next()
        self.state.commands[self.command_id].version = new
        return new

    def pause(self) -> None:
        """Hold every job at "(Waiting to start)" until :meth:`resume` (tests fill queues with it)."""
        self._go.clear()

    def resume(self) -> None:
        """Let held jobs run."""
        self._go.set()

    def set_account_fault(self, user_id: int, kind: str | None) -> None:
        """Make every request of ``user_id`` fail with ``kind`` (None clears it)."""
        if kind is not None and kind not in ERRORS:
            raise ValueError(f"unknown error kind {kind!r}")
        self._account(user_id).fault = kind

    def fail_next(self, user_id: int, kind: str, times: int = 1) -> None:
        """Make the next ``times`` requests of ``user_id`` fail with ``kind``."""
        if kind not in ERRORS:
            raise ValueError(f"unknown error kind {kind!r}")
        self._account(user_id).fail_next.extend([kind] * times)

    def fail_next_run(self, user_id: int, kind: str = "output_filtered", times: int = 1) -> None:
        """Make the next ``times`` grid jobs of ``user_id`` that start running fail part-way.

        As Midjourney does when its output filter stops a job: the progress
        message goes away and a red embed answers the request instead of a grid.
        """
        if kind not in ERRORS:
            raise ValueError(f"unknown error kind {kind!r}")
        self._account(user_id).fail_running.extend([kind] * times)

    def set_remix(self, user_id: int, on: bool) -> None:
        """Turn the account's Remix mode on or off (what /settings' "Remix mode" toggles)."""
        self._account(user_id).remix = on

    def remix(self, user_id: int) -> bool:
        """Whether the account's Remix mode is on."""
        return self._account(user_id).remix

    def running(self, user_id: int) -> int:
        """Jobs of ``user_id`` running now."""
        return self._account(user_id).running

    def _account(self, user_id: int) -> _Account:
        return self._accounts.setdefault(user_id, _Account())

    # -- intake ------------------------------------------------------------------------------

    def _on_interaction(self, inter: Interaction) -> None:
        task = asyncio.get_running_loop().create_task(self._intake(inter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _intake(self, inter: Interaction) -> None:
        acct = self._account(inter.user.id)
        fault = acct.fail_next.popleft() if acct.fail_next else acct.fault
        if fault is not None:
            self._error(inter, fault)
            return
        if inter.type == 2 and inter.data.get("name") == "settings":
            self._settings(inter)
            return
        if inter.type == 2:
            job = self._command(inter)
        elif inter.type == 5:
            job = self._form_submitted(inter)
        else:
            job = self._button(inter)
        if job is None:
            return
        self.jobs[job.hash] = job
        if acct.running < self.settings.max_concurrent:
            await self._run(job)
        elif len(acct.waiting) >= self.settings.max_queued:
            self._error(inter, "queue_full")
        else:
            acct.waiting.append(job)
            self._post(
                inter,
                job,
                content="",
                embeds=[
                    self._embed(
                        "Job queued",
                        f"Your job will start shortly. You have {len(acct.waiting)} job(s) waiting.",
                        QUEUED_COLOR,
                    )
                ],
                nonce=True,
            )

    def _command(self, inter: Interaction) -> Job | None:
        name = inter.data.get("name")
        if name == "blend":
            return self._blend(inter)
        if name == "describe":
            return self._describe(inter)
        return self._imagine(inter)

    def _resolved(self, inter: Interaction) -> dict[str, tuple[bytes, str]]:
        """An attachment option's name → (bytes, URL), from ``data.resolved.attachments``."""
        resolved = (inter.data.get("resolved") or {}).get("attachments") or {}
        out: dict[str, tuple[bytes, str]] = {}
        for option in inter.data.get("options") or []:
            if option.get("type") != 11:
                continue
            payload = resolved.get(str(option.get("value"))) or {}
            att = self.state.attachments.get(int(payload.get("id", 0)))
            if att is not None:
                out[str(option["name"])] = (att.data, str(payload.get("url", "")))
        return out

    def _blend(self, inter: Interaction) -> Job | None:
        images = self._resolved(inter)
        ordered = [images[f"image{n}"] for n in range(1, 6) if f"image{n}" in images]
        if len(ordered) < 2:
            self._error(inter, "invalid_parameter", "Blend needs at least 2 images.")
            return None
        options = {o.get("name"): o.get("value") for o in inter.data.get("options") or []}
        dimensions = str(options.get("dimensions") or "--ar 1:1")
        prompt = " ".join(url for _, url in ordered) + " " + dimensions
        job = Job(str(uuid.uuid4()), "blend", prompt, inter.user, inter.channel_id, inter)
        job.inputs = [data for data, _ in ordered]
        job.aspect = inputs.aspect_of(dimensions)
        return job

    def _describe(self, inter: Interaction) -> Job | None:
        image = self._resolved(inter).get("image")
        if image is None:
            self._error(inter, "invalid_link", "The image could not be loaded.")
            return None
        job = Job(str(uuid.uuid4()), "describe", "", inter.user, inter.channel_id, inter)
        job.inputs, job.input_url = [image[0]], image[1]
        return job

    def _links(self, inter: Interaction, prompt: str) -> list[bytes] | None:
        """The images an /imagine prompt links (None after an "Invalid link" answer)."""
        loaded: list[bytes] = []
        for url in inputs.split_links(prompt).links:
            data = inputs.load_link(self.state, self._base_url(), url)
            if data is None:
                self._error(inter, "invalid_link")
                return None
            loaded.append(data)
        return loaded

    def _imagine(self, inter: Interaction) -> Job | None:
        options = inter.data.get("options") or []
        raw = next((o.get("value") for o in options if o.get("name") == "prompt"), None)
        if not isinstance(raw, str) or not raw.strip():
            self._error(inter, "invalid_prompt")
            return None
        prompt = normalize_prompt(raw)
        marker = MARKER.search(prompt)
        if marker and marker.group(1) in ERRORS:
            self._error(inter, marker.group(1))
            return None
        lowered = prompt.lower()
        if any(word.lower() in lowered for word in self.settings.banned_words):
            self._error(inter, "banned_prompt")
            return None
        try:
            check_params(prompt)
        except ParamError as exc:
            self._error(inter, "invalid_parameter", str(exc))
            return None
        links = self._links(inter, prompt)
        if links is None:
            return None
        job = Job(str(uuid.uuid4()), "imagine", prompt, inter.user, inter.channel_id, inter)
        job.inputs = links
        return job

    def _button(self, inter: Interaction) -> Job | None:
        press = read_press(str(inter.data.get("custom_id", "")))
        parent = self.jobs.get(press.hash) if press else None
        if press is None or parent is None:
            self._error(inter, "invalid_link", "This job is no longer available.")
            return None
        acct = self._account(inter.user.id)
        if press.action == "custom_zoom" or (acct.remix and press.action in REMIXABLE):
            self._ask(inter, press, parent)
            return None
        return self._pressed(inter, press, parent, parent.prompt)

    def _pressed(
        self, inter: Interaction, press: Press, parent: Job, prompt: str, *, remix: bool = False
    ) -> Job:
        return Job(
            str(uuid.uuid4()),
            press.kind,  # type: ignore[arg-type]
            prompt,
            inter.user,
            inter.channel_id,
            inter,
            index=press.index,
            parent=parent,
            inputs=list(parent.inputs),
            press=press,
            remix=remix,
        )

    def _ask(self, inter: Interaction, press: Press, parent: Job) -> None:
        """Answer the press with Midjourney's form (over the account's gateway)."""
        modal = modal_for(
            press,
            parent.prompt,
            modal_id=self.state.ids.next(),
            application_id=self.app_id,
            user_id=inter.user.id,
            channel_id=inter.channel_id,
        )
        self._account(inter.user.id).forms[modal.custom_id] = (press, parent)
        if self._open_modal is None:
            raise RuntimeError("this Midjourney stand-in cannot open modals")
        self._open_modal(inter, modal)

    def _form_submitted(self, inter: Interaction) -> Job | None:
        """A submitted form (Discord checked its ids): the job it asks for, or an error embed."""
        acct = self._account(inter.user.id)
        form = acct.forms.pop(str(inter.data.get("custom_id")), None)
        rows = inter.data.get("components") or []
        values = [c.get("value", "") for row in rows for c in row.get("components", [])]
        if form is None or not values:
            self._error(inter, "invalid_link", "This form is no longer available.")
            return None
        press, parent = form
        prompt = normalize_prompt(str(values[0]))
        if press.action == "custom_zoom" or press.zoom is not None:
            zoom = zoom_of(prompt)
            if zoom is None or not 1.0 <= zoom <= 2.0:
                self._error(inter, "invalid_parameter", "Invalid value for `--zoom` (1.0–2.0)")
                return None
            press = Press(press.action, press.index, press.hash, zoom=zoom)
        try:
            check_params(re.sub(r"--zoom\s+\S+", " ", prompt))
        except ParamError as exc:
            self._error(inter, "invalid_parameter", str(exc))
            return None
        return self._pressed(inter, press, parent, prompt, remix=prompt != parent.prompt)

    def _settings(self, inter: Interaction) -> None:
        """/settings: the account's settings message (what a client reads Remix mode from)."""
        acct = self._account(inter.user.id)
        suffix = f"--v 7 --{self.settings.mode}"
        self._post(
            inter,
            None,
            content=f"Adjust your settings here. Current suffix:\n```  {suffix}```",
            components=settings_components(remix=acct.remix, mode=self.settings.mode),
            nonce=True,
            ephemeral=True,
        )

    # -- running -----------------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        acct = self._account(job.user.id)
        acct.running += 1
        job.status = "running"
        try:
            if job.kind == "upscale":
                await asyncio.wait_for(self._go.wait(), 600)
                self._finish_single(job)
            elif job.kind == "describe":
                await asyncio.wait_for(self._go.wait(), 600)
                await self._finish_describe(job)
            else:
                await self._grid_job(job)
            job.status = "done"
        except _JobStopped:
            job.status = "failed"
        except Exception:
            job.status = "failed"
            log.exception("sandbox.midjourney.job_failed", job=job.hash)
        finally:
            acct.running -= 1
        if acct.waiting and acct.running < self.settings.max_concurrent:
            nxt = acct.waiting.popleft()
            task = asyncio.get_running_loop().create_task(self._run(nxt))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _head(self, job: Job) -> str:
        press = job.press
        if press is None and job.kind == "variation":
            press = Press("variation", job.index, job.parent.hash if job.parent else "")
        return content_line(press, job.prompt, f"<@{job.user.id}>", remix=job.remix)

    async def _grid_job(self, job: Job) -> None:
        head = self._head(job)
        first = self._post(job.interaction, job, content=f"{head} (Waiting to start)", nonce=True)
        job.progress_message_id = first.id
        await asyncio.wait_for(self._go.wait(), 600)
        tile = self.settings.tile_size
        acct = self._account(job.user.id)
        for n, percent in enumerate(self.settings.progress_steps):
            await asyncio.sleep(self.settings.step_delay)
            if n == 1 and acct.fail_running:
                self.state.delete_message(first)
                self._error(job.interaction, acct.fail_running.popleft(), job=job)
                raise _JobStopped
            png = mjimage.preview_png(job.prompt, job.hash, tile, percent)
            att = self._attachment(job, f"grid_0_{job.hash}_preview.png", png, tile)
            first.content = f"{head} ({percent}%) ({self.settings.mode})"
            first.attachments = [att]
            self.state.announce_update(first)
        await asyncio.sleep(self.settings.step_delay)
        if job.kind == "blend":
            png = inputs.blend_grid(job.inputs, tile, job.aspect)
        else:  # the pressed effect on the parent's image, or the image prompts in every tile
            png = self._grid_png(job) or inputs.grid_with_inputs(
                job.prompt, job.hash, tile, job.inputs
            )
        job.png = png
        width, height = mjimage_size(png)
        att = self._attachment(job, self._filename(job), png, width, height)
        final = self._post(
            job.interaction,
            job,
            content=f"{head} ({self.settings.mode})",
            attachments=[att],
            components=grid_components(job.hash),
            reference=job.parent.result_message_id if job.parent else None,
        )
        job.result_message_id = final.id
        # Midjourney removes the progress message once the result is posted.
        self.state.delete_message(first)

    async def _finish_describe(self, job: Job) -> None:
        await asyncio.sleep(self.settings.step_delay)
        prompts = inputs.describe(job.inputs[0])
        self._post(
            job.interaction,
            job,
            content="",
            embeds=[inputs.describe_embed(prompts, job.input_url)],
            components=inputs.describe_components(),
            nonce=True,
        )

    def _grid_png(self, job: Job) -> bytes | None:
        """The four candidates of a pressed effect on the parent's image (None: no effect)."""
        press, parent = job.press, job.parent
        if press is None or parent is None or parent.png is None or parent.kind != "upscale":
            return None
        old = mjeffects.load(parent.png)
        tiles = []
        for i in range(4):
            seed = f"{job.hash}:{i}"
            if press.zoom is not None:
                tiles.append(mjeffects.zoom_out(old, press.zoom, job.prompt, seed))
            elif press.pan is not None:
                tiles.append(mjeffects.pan(old, press.pan, job.prompt, seed))
            elif press.action == "make_square":
                tiles.append(mjeffects.make_square(old, job.prompt, seed))
            else:
                strength = 0.25 if press.action == "vary_subtle" else 0.6
                tiles.append(mjeffects.vary(old, strength, job.prompt, seed))
        return mjeffects.grid(tiles)

    def _single_png(self, job: Job) -> bytes:
        press, parent = job.press, job.parent
        tile = self.settings.tile_size
        if parent is None or parent.png is None:
            return mjimage.single_png(job.prompt, job.hash, tile)
        if press is None or press.action == "upscale":
            if parent.kind == "upscale":
                return mjimage.single_png(job.prompt, job.hash, tile)
            crop = mjeffects.crop_tile(parent.png, job.index or 1)
            return mjimage.to_png(crop.resize((crop.width * 2, crop.height * 2)))
        old = mjeffects.load(parent.png)
        if press.action == "upscale_subtle":
            return mjimage.to_png(mjeffects.upscale(old, creative=False))
        if press.action == "upscale_creative":
            return mjimage.to_png(mjeffects.upscale(old, creative=True))
        return mjimage.to_png(mjeffects.swirl(old))

    def _finish_single(self, job: Job) -> None:
        png = job.png = self._single_png(job)
        width, height = mjimage_size(png)
        att = self._attachment(job, self._filename(job), png, width, height)
        upscaled = job.press is not None and job.press.action in (
            "upscale_subtle",
            "upscale_creative",
        )
        suffix = (
            "" if job.press is None or job.press.action == "upscale" else f" ({self.settings.mode})"
        )
        msg = self._post(
            job.interaction,
            job,
            content=self._head(job) + suffix,
            attachments=[att],
            components=single_components(job.hash, square=width == height, upscaled=upscaled),
            reference=job.parent.result_message_id if job.parent else None,
            nonce=True,
        )
        job.result_message_id = msg.id

    # -- message building -------------------------------------------------------------------------

    def _filename(self, job: Job) -> str:
        slug = (
            re.sub(r"[^a-z0-9]+", "_", job.prompt.split("--")[0].lower()).strip("_")[:40] or "image"
        )
        return f"{job.user.username.lower()}_{slug}_{job.hash}.png"

    def _attachment(
        self, job: Job, name: str, png: bytes, width: int, height: int | None = None
    ) -> Attachment:
        return self.state.add_attachment(
            job.channel_id, name, png, "image/png", width=width, height=height or width
        )

    @staticmethod
    def _embed(title: str, description: str, color: int) -> JSON:
        return {"type": "rich", "title": title, "description": description, "color": color}

    def _post(  # noqa: PLR0913
        self,
        inter: Interaction,
        job: Job | None,
        *,
        content: str,
        embeds: list[JSON] | None = None,
        attachments: list[Attachment] | None = None,
        components: list[JSON] | None = None,
        reference: int | None = None,
        nonce: bool = False,
        ephemeral: bool = False,
    ) -> Message:
        channel = self.state.get_channel(inter.channel_id)
        # Only the first message of a request carries the caller's nonce.
        use_nonce = nonce and (job is None or not job.nonce_used)
        if job is not None and use_nonce:
            job.nonce_used = True
        name = "imagine" if inter.type == 2 else None
        msg = Message(
            id=self.state.ids.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=self.bot,
            content=content,
            created_at=self.state.clock.now(),
            embeds=list(embeds or []),
            components=list(components or []),
            attachments=list(attachments or []),
            nonce=inter.nonce if use_nonce else None,
            mentions=[inter.user],
            interaction_metadata=payloads.interaction_metadata(inter, name=name),
        )
        if reference is not None:
            msg.type = 19
            msg.message_reference = {
                "type": 0,
                "message_id": str(reference),
                "channel_id": str(channel.id),
                "guild_id": str(channel.guild_id),
            }
        if ephemeral:
            msg.flags = 64
            msg.visible_to = inter.user.id
        self.state.store_message(msg)
        return msg

    def _error(
        self, inter: Interaction, kind: str, detail: str | None = None, *, job: Job | None = None
    ) -> Message:
        title, description = ERRORS[kind]
        description = detail or description.format(max_queued=self.settings.max_queued)
        log.debug("sandbox.midjourney.error", kind=kind, user=inter.user.id)
        return self._post(
            inter,
            job,
            content="",
            embeds=[self._embed(title, description, RED)],
            nonce=True,
            ephemeral=self.settings.ephemeral_errors,
        )
