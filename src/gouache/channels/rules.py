"""One request under its channel's settings: where it may run, with which model and defaults.

`ChannelRules.place` runs before quota is reserved. It refuses (nothing is
charged) a request in a closed channel, an adult prompt the channel's content
rule refuses, an unknown model (listing the valid ones), a model or backend
the channel or the member's tier does not allow; otherwise it says which
backend runs the job, which parameters and job meta it carries, and the
channel's daily cap to reserve with the member's quota.

Precedence, field by field: what the member typed in the prompt or options,
then the member's `/preferences` (where the channel and tier allow them),
then the channel's defaults.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from gouache.channels.catalog import ModelCatalog, ModelChoice
from gouache.channels.content import AdultWords, decide_content
from gouache.channels.errors import ChannelClosed, ContentRefused, NotAllowed, UnknownModel
from gouache.channels.settings import (
    ChannelSettings,
    MemberPreferences,
    SettingsContext,
    apply_changes,
    apply_preferences,
)
from gouache.channels.store import ChannelStore
from gouache.errors import InvalidParameter
from gouache.params import Params, ParsedPrompt, parse_prompt

log = structlog.get_logger(__name__)

#: Job meta keys this module writes (delivery and the workers read them).
SPOILER = "spoiler"
MJ_MODE = "mj_mode"
MJ_APP = "mj_app"
WORKFLOW = "workflow"
CHECKPOINT = "checkpoint"
LORAS = "loras"
SERVERS = "comfy_servers"
MODEL = "model"

_MJ_PARAMS: dict[str, dict[str, str]] = {
    "v7": {"version": "7"},
    "v6.1": {"version": "6.1"},
    "niji": {"niji": "6"},
}


class TierLimits(Protocol):
    """What a tier may restrict (`gouache.bot.service.Tier` has these)."""

    @property
    def name(self) -> str: ...
    @property
    def backends(self) -> Collection[str] | None: ...
    @property
    def models(self) -> Collection[str] | None: ...
    @property
    def midjourney_mode(self) -> str | None: ...


@dataclass(frozen=True)
class Placement:
    """What `ChannelRules.place` decided for one request."""

    backend: str | None
    params: Params
    meta: dict[str, Any] = field(default_factory=dict)
    channel_cap: int | None = None


def _fits(backend: str, channel: ChannelSettings, tier: TierLimits | None) -> bool:
    if channel.backend not in ("any", backend):
        return False
    return tier is None or tier.backends is None or backend in tier.backends


def _tier_allows(choice: ModelChoice, tier: TierLimits | None) -> bool:
    return tier is None or tier.models is None or choice.value in tier.models


@dataclass
class ChannelRules:
    """Channel settings, member preferences, content rules and model choice, over one store."""

    store: ChannelStore
    catalog: ModelCatalog
    adult: AdultWords = field(default_factory=AdultWords)

    # -- settings ------------------------------------------------------------------

    async def settings(self, channel_id: int | None) -> ChannelSettings:
        """The channel's settings (defaults outside a channel)."""
        if channel_id is None:
            return ChannelSettings()
        return await self.store.get_channel_settings(channel_id)

    def context(self, tier: TierLimits | None = None) -> SettingsContext:
        """What a change is validated against: the models the pool can run now."""
        return SettingsContext(
            workflows=self.catalog.workflows(),
            checkpoints=self.catalog.checkpoints(),
            loras=self.catalog.loras(),
            allowed_models=None if tier is None or tier.models is None else set(tier.models),
            model_backend=lambda value: self.catalog.resolve(value).backend,
        )

    async def change(self, channel_id: int, changes: Mapping[str, object]) -> ChannelSettings:
        """Validate and save a change of the channel's settings (all of it, or nothing)."""
        current = await self.store.get_channel_settings(channel_id)
        new = apply_changes(current, changes, self.context())
        await self.store.put_channel_settings(channel_id, new)
        log.info("channel.settings_changed", channel_id=channel_id, changed=sorted(changes))
        return new

    async def change_preferences(
        self, user_id: int, changes: Mapping[str, object], tier: TierLimits | None
    ) -> MemberPreferences:
        """Validate and save a member's own defaults (all of it, or nothing)."""
        current = await self.store.get_preferences(user_id)
        new = apply_preferences(current, changes, self.context(tier))
        await self.store.put_preferences(user_id, new)
        return new

    # -- one request ---------------------------------------------------------------

    async def admit(self, channel_id: int | None) -> ChannelSettings:
        """The channel's settings, or `ChannelClosed` if it takes no requests."""
        settings = await self.settings(channel_id)
        if not settings.enabled:
            raise ChannelClosed("This channel does not take image requests.")
        return settings

    def check_content(
        self, settings: ChannelSettings, texts: Collection[str], *, nsfw: bool
    ) -> bool:
        """Refuse an adult prompt the channel does not take; True if results go out as spoilers."""
        hit = self.adult.find(*texts)
        decision = decide_content(settings.content, adult=hit is not None, nsfw_channel=nsfw)
        if decision == "refuse":
            log.info("channel.content_refused", term=hit)
            where = "" if nsfw else " Adult prompts belong in a channel marked NSFW."
            raise ContentRefused(f"This channel does not take adult prompts.{where}")
        return decision == "spoiler"

    async def place(  # noqa: PLR0913
        self,
        settings: ChannelSettings,
        parsed: ParsedPrompt,
        *,
        user_id: int,
        model: str | None,
        backend: str | None,
        tier: TierLimits | None,
    ) -> Placement:
        """Backend, parameters, meta and cap of one request (see module docstring)."""
        if backend is not None and not _fits(backend, settings, tier):
            raise InvalidParameter(self._backend_refusal(backend, settings))
        choice = self._explicit(model, settings, tier, backend)
        prefs = await self.store.get_preferences(user_id)
        if choice is None:
            choice = self._preferred(prefs, settings, tier, backend)
        if choice is None:
            choice = self._channel_default(settings, tier, backend)
        chosen_backend = backend or (choice.backend if choice else None)
        if chosen_backend is None:
            chosen_backend = self._only_backend(settings, tier)
        meta: dict[str, Any] = {}
        params = self._params(parsed.params, prefs, settings, choice)
        if choice is not None:
            meta[MODEL] = choice.value
            self._model_meta(choice, settings, meta)
        elif chosen_backend == "comfyui":
            self._comfy_defaults(settings, meta)
        if meta.get(CHECKPOINT) or meta.get(LORAS):
            # Only a server that has them can run the job (read from its /object_info).
            meta[SERVERS] = sorted(
                self.catalog.servers_with(
                    checkpoint=meta.get(CHECKPOINT), loras=meta.get(LORAS, ())
                )
            )
            if not meta[SERVERS]:
                raise UnknownModel(
                    "No image server that is up has that checkpoint and those LoRAs right now."
                )
        if tier is not None and tier.midjourney_mode and chosen_backend != "comfyui":
            meta[MJ_MODE] = tier.midjourney_mode
        return Placement(chosen_backend, params, meta, settings.daily_cap)

    # -- helpers -------------------------------------------------------------------

    @staticmethod
    def _backend_refusal(backend: str, settings: ChannelSettings) -> str:
        if settings.backend not in ("any", backend):
            return f"This channel uses {settings.backend} only, not {backend}."
        return f"Your tier may not use {backend}."

    def _explicit(
        self,
        model: str | None,
        settings: ChannelSettings,
        tier: TierLimits | None,
        backend: str | None,
    ) -> ModelChoice | None:
        if model is None or not model.strip():
            return None
        choice = self.catalog.resolve(model)
        if backend is not None and choice.backend != backend:
            raise InvalidParameter(f"{choice.value} runs on {choice.backend}, not on {backend}.")
        if not _fits(choice.backend, settings, tier):
            raise NotAllowed(self._backend_refusal(choice.backend, settings))
        if not _tier_allows(choice, tier):
            assert tier is not None
            assert tier.models is not None
            allowed = ", ".join(sorted(tier.models)) or "none"
            raise NotAllowed(f"Your tier may not use {choice.value}; yours: {allowed}.")
        return choice

    def _usable(
        self, value: str, settings: ChannelSettings, tier: TierLimits | None, backend: str | None
    ) -> ModelChoice | None:
        try:
            choice = self.catalog.resolve(value)
        except UnknownModel:
            return None  # the pool cannot run it now: fall back to the next default
        if backend is not None and choice.backend != backend:
            return None
        if not _fits(choice.backend, settings, tier) or not _tier_allows(choice, tier):
            return None
        return choice

    def _preferred(
        self,
        prefs: MemberPreferences,
        settings: ChannelSettings,
        tier: TierLimits | None,
        backend: str | None,
    ) -> ModelChoice | None:
        return self._usable(prefs.model, settings, tier, backend) if prefs.model else None

    def _channel_default(
        self, settings: ChannelSettings, tier: TierLimits | None, backend: str | None
    ) -> ModelChoice | None:
        for value in (
            settings.model,
            f"workflow:{settings.workflow}" if settings.workflow else None,
            f"checkpoint:{settings.checkpoint}" if settings.checkpoint else None,
        ):
            if value and (choice := self._usable(value, settings, tier, backend)):
                return choice
        return None

    def _only_backend(self, settings: ChannelSettings, tier: TierLimits | None) -> str | None:
        if settings.backend != "any":
            return settings.backend
        if tier is not None and tier.backends is not None:
            kinds = [b for b in sorted(tier.backends) if b in self.catalog.backends()]
            if not kinds:
                raise NotAllowed("No worker your tier may use is running now.")
            return kinds[0]
        return None

    @staticmethod
    def _params(
        own: Params,
        prefs: MemberPreferences,
        settings: ChannelSettings,
        choice: ModelChoice | None,
    ) -> Params:
        """The prompt's parameters over the member's defaults over the channel's."""
        merged: dict[str, Any] = {}
        for defaults in (settings.params, prefs.params):
            if defaults:
                merged.update(
                    parse_prompt(f"x {defaults}").params.model_dump(exclude_defaults=True)
                )
        if choice is not None and choice.kind == "midjourney":
            merged.pop("version", None)
            merged.pop("niji", None)
            merged.update(_MJ_PARAMS[choice.value])
        merged.update(own.model_dump(exclude_defaults=True))
        if "niji" in merged and "version" in merged:  # the prompt's own choice wins
            merged.pop("niji" if "version" in own.model_dump(exclude_defaults=True) else "version")
        return Params(**merged)

    def _model_meta(
        self, choice: ModelChoice, settings: ChannelSettings, meta: dict[str, Any]
    ) -> None:
        if choice.kind == "midjourney":
            if choice.value == "niji":
                meta[MJ_APP] = "niji"
            return
        if choice.kind == "workflow":
            meta[WORKFLOW] = choice.name
        self._comfy_defaults(settings, meta)
        if choice.kind == "checkpoint":
            meta[CHECKPOINT] = choice.name
        elif choice.kind == "lora":
            meta[LORAS] = [choice.name]

    @staticmethod
    def _comfy_defaults(settings: ChannelSettings, meta: dict[str, Any]) -> None:
        if settings.workflow:
            meta.setdefault(WORKFLOW, settings.workflow)
        if settings.checkpoint:
            meta.setdefault(CHECKPOINT, settings.checkpoint)
        if settings.loras:
            meta.setdefault(LORAS, list(settings.loras))
