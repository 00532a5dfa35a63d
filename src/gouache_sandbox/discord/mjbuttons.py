"""The Midjourney stand-in's buttons: today's layouts, what a press asks for, modals, content lines.

Layouts follow Midjourney (v6/v7): a grid carries U1–U4, 🔄, V1–V4; one image
carries Upscale (Subtle)/(Creative), Vary (Subtle)/(Strong)/(Region), Zoom Out
2x/1.5x, Custom Zoom, Make Square (when not square), ⬅️ ➡️ ⬆️ ⬇️, ❤️ and a
link to the web gallery. One more button, **Swirl**, exists only here: it is
the "button Midjourney adds next month" that gouache must relay without
knowing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gouache_sandbox.discord.modals import PendingModal, TextInput
from gouache_sandbox.discord.state import JSON

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_JOB = re.compile(rf"^MJ::JOB::([a-z0-9_]+)::(\d)::({_UUID})(?:::SOLO)?$")
_OUTPAINT = re.compile(rf"^MJ::Outpaint::(\d+)::(\d)::({_UUID})::SOLO$")
_CUSTOM_ZOOM = re.compile(rf"^MJ::CustomZoom::({_UUID})$")
_ZOOM = re.compile(r"(?:^|\s)--zoom\s+(\S+)", re.IGNORECASE)
#: The invented button (see the module docstring).
SWIRL = "sandbox_swirl"
WEB = "https://www.midjourney.com/jobs/{hash}"
#: Presses that open a Remix form when the account's Remix mode is on.
REMIXABLE: Final = frozenset(
    {"variation", "vary_subtle", "vary_strong", "reroll", "zoom_2", "zoom_1.5"}
    | {f"pan_{d}" for d in ("left", "right", "up", "down")}
)
#: Presses whose result is one image (the others make a grid of four).
SINGLE: Final = frozenset({"upscale", "upscale_subtle", "upscale_creative", SWIRL})


@dataclass(frozen=True, slots=True)
class Press:
    """A button press, read from its custom id."""

    action: str  # upscale, variation, reroll, vary_subtle, vary_strong, upscale_subtle, …
    index: int
    hash: str
    zoom: float | None = None

    @property
    def kind(self) -> str:
        """The stand-in's job kind: upscale (one image) or variation/reroll (a grid)."""
        if self.action in SINGLE:
            return "upscale"
        return "reroll" if self.action == "reroll" else "variation"

    @property
    def pan(self) -> str | None:
        """left/right/up/down for a pan."""
        return self.action[4:] if self.action.startswith("pan_") else None


_JOB_ACTIONS: Final = {
    "upsample": "upscale",
    "variation": "variation",
    "reroll": "reroll",
    "low_variation": "vary_subtle",
    "high_variation": "vary_strong",
    "pan_left": "pan_left",
    "pan_right": "pan_right",
    "pan_up": "pan_up",
    "pan_down": "pan_down",
    SWIRL: SWIRL,
}


def read_press(custom_id: str) -> Press | None:
    """What a custom id asks for, or None for one Midjourney would not know."""
    m = _JOB.match(custom_id)
    if m is not None:
        action, index, job_hash = m.group(1), int(m.group(2)), m.group(3)
        if re.fullmatch(r"upsample_v\d+_2x_(subtle|creative)", action):
            return Press(f"upscale_{action.rsplit('_', 1)[1]}", index, job_hash)
        known = _JOB_ACTIONS.get(action)
        return Press(known, index, job_hash) if known else None
    m = _OUTPAINT.match(custom_id)
    if m is not None:
        percent, index, job_hash = int(m.group(1)), int(m.group(2)), m.group(3)
        if percent == 100:
            return Press("make_square", index, job_hash)
        if percent in (50, 75):
            zoom = 2.0 if percent == 50 else 1.5
            return Press(f"zoom_{zoom:g}", index, job_hash, zoom=zoom)
        return None
    m = _CUSTOM_ZOOM.match(custom_id)
    if m is not None:
        return Press("custom_zoom", 1, m.group(1))
    return None


def button(label: str, custom_id: str, emoji: str | None = None, style: int = 2) -> JSON:
    """One button as Midjourney sends it."""
    out: JSON = {"type": 2, "style": style, "custom_id": custom_id}
    if label:
        out["label"] = label
    if emoji:
        out["emoji"] = {"name": emoji}
    return out


def grid_components(job_hash: str) -> list[JSON]:
    """U1–U4 and 🔄, then V1–V4."""
    ups = [button(f"U{n}", f"MJ::JOB::upsample::{n}::{job_hash}") for n in range(1, 5)]
    ups.append(button("", f"MJ::JOB::reroll::0::{job_hash}::SOLO", "🔄"))
    vs = [button(f"V{n}", f"MJ::JOB::variation::{n}::{job_hash}") for n in range(1, 5)]
    return [{"type": 1, "components": ups}, {"type": 1, "components": vs}]


def single_components(job_hash: str, *, square: bool, upscaled: bool = False) -> list[JSON]:
    """The buttons under one image; ``upscaled`` (already 2×) drops the upscale buttons."""
    h = job_hash
    first: list[JSON] = []
    if not upscaled:
        first += [
            button("Upscale (Subtle)", f"MJ::JOB::upsample_v6_2x_subtle::1::{h}::SOLO"),
            button("Upscale (Creative)", f"MJ::JOB::upsample_v6_2x_creative::1::{h}::SOLO"),
        ]
    first += [
        button("Vary (Subtle)", f"MJ::JOB::low_variation::1::{h}::SOLO", "🪄"),
        button("Vary (Strong)", f"MJ::JOB::high_variation::1::{h}::SOLO", "🪄"),
        button("Vary (Region)", f"MJ::Inpaint::1::{h}::SOLO", "🖌️"),
    ]
    zoom = [
        button("Zoom Out 2x", f"MJ::Outpaint::50::1::{h}::SOLO", "🔍"),
        button("Zoom Out 1.5x", f"MJ::Outpaint::75::1::{h}::SOLO", "🔍"),
        button("Custom Zoom", f"MJ::CustomZoom::{h}", "🔍"),
    ]
    if not square:
        zoom.append(button("Make Square", f"MJ::Outpaint::100::1::{h}::SOLO", "↔️"))
    pans = [
        button("", f"MJ::JOB::pan_{d}::1::{h}::SOLO", emoji)
        for d, emoji in (("left", "⬅️"), ("right", "➡️"), ("up", "⬆️"), ("down", "⬇️"))
    ]
    last = [
        button("", f"MJ::BOOKMARK::{h}", "❤️"),
        button("Swirl", f"MJ::JOB::{SWIRL}::1::{h}::SOLO", "🌀"),
        {"type": 2, "style": 5, "label": "Web", "url": WEB.format(hash=h)},
    ]
    return [{"type": 1, "components": row} for row in (first, zoom, pans, last)]


def content_line(press: Press | None, prompt: str, mention: str, *, remix: bool) -> str:
    """The head of a result's content, as Midjourney words it (without the mode)."""
    if press is None or press.action == "reroll":
        return f"**{prompt}** - {mention}"
    if press.action == "upscale":
        return f"**{prompt}** - Image #{press.index} {mention}"
    what = {
        "variation": "Variations (Strong)",
        "vary_strong": "Variations (Strong)",
        "vary_subtle": "Variations (Subtle)",
        "upscale_subtle": "Upscaled (Subtle)",
        "upscale_creative": "Upscaled (Creative)",
        "make_square": "Make Square",
        SWIRL: "Swirl",
    }.get(press.action)
    if press.zoom is not None or press.action == "custom_zoom":
        what = "Zoom Out"
    elif press.pan is not None:
        what = f"Pan {press.pan.capitalize()}"
    if remix and press.action in ("variation", "vary_strong", "vary_subtle"):
        what = what.replace("Variations", "Remix") if what else "Remix"
    return f"**{prompt}** - {what or 'Image'} by {mention}"


def modal_for(  # noqa: PLR0913
    press: Press,
    prompt: str,
    *,
    modal_id: int,
    application_id: int,
    user_id: int,
    channel_id: int,
) -> PendingModal:
    """The form Midjourney opens for ``press``: Custom Zoom, Pan (Remix) or Remix."""
    base = _ZOOM.sub(" ", prompt).strip()
    common = {
        "id": modal_id,
        "application_id": application_id,
        "user_id": user_id,
        "channel_id": channel_id,
    }
    if press.action == "custom_zoom" or press.zoom is not None:
        value = f"{base} --zoom {press.zoom or 2:g}"
        return PendingModal(
            custom_id=f"MJ::OutpaintCustomZoomModal::{press.hash}",
            title="Zoom Out",
            inputs=[TextInput("MJ::OutpaintCustomZoomModal::prompt", "Prompt", 2, value)],
            **common,
        )
    if press.pan is not None:
        return PendingModal(
            custom_id=f"MJ::PanModal::{press.pan}::{press.hash}::{press.index}",
            title=f"Pan {press.pan.capitalize()}",
            inputs=[TextInput("MJ::PanModal::prompt", "Prompt", 2, base)],
            **common,
        )
    return PendingModal(
        custom_id=f"MJ::RemixModal::{press.hash}::{press.index}::1",
        title="Remix Prompt",
        inputs=[TextInput("MJ::RemixModal::new_prompt", "New prompt for image", 2, base)],
        **common,
    )


def zoom_of(value: str) -> float | None:
    """The ``--zoom`` of a Custom Zoom prompt, or None when missing or not a number."""
    m = _ZOOM.search(value)
    if m is None:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def settings_components(*, remix: bool, mode: str) -> list[JSON]:
    """The /settings answer's buttons: a toggle is green (style 3) when on, grey (2) when off."""

    def toggle(label: str, custom_id: str, on: bool, emoji: str | None = None) -> JSON:
        return button(label, custom_id, emoji, 3 if on else 2)

    return [
        {
            "type": 1,
            "components": [
                {
                    "type": 3,
                    "custom_id": "MJ::Settings::VersionSelector",
                    "options": [
                        {"label": "Midjourney Model V7", "value": "7", "default": True},
                        {"label": "Midjourney Model V6.1", "value": "6.1"},
                    ],
                    "placeholder": "Select a version",
                }
            ],
        },
        {
            "type": 1,
            "components": [
                toggle("RAW Mode", "MJ::Settings::Style::raw", False, "🔧"),
                toggle("Stylize low", "MJ::Settings::Stylize::50", False, "🖌️"),
                toggle("Stylize med", "MJ::Settings::Stylize::100", True, "🖌️"),
                toggle("Stylize high", "MJ::Settings::Stylize::250", False, "🖌️"),
                toggle("Stylize very high", "MJ::Settings::Stylize::750", False, "🖌️"),
            ],
        },
        {
            "type": 1,
            "components": [
                toggle("Personalization", "MJ::Settings::Personalization", False, "🙋"),
                toggle("Public mode", "MJ::Settings::PublicMode::1", True, "🧍‍♂️"),
                toggle("Remix mode", "MJ::Settings::RemixMode", remix, "🎛️"),
                toggle("High Variation Mode", "MJ::Settings::HighVariabilityMode::1", True, "🎨"),
                toggle("Low Variation Mode", "MJ::Settings::HighVariabilityMode::0", False, "🎨"),
            ],
        },
        {
            "type": 1,
            "components": [
                toggle("Turbo mode", "MJ::Settings::TurboMode", mode == "turbo", "⚡"),
                toggle("Fast mode", "MJ::Settings::FastMode", mode == "fast", "🐇"),
                toggle("Relax mode", "MJ::Settings::RelaxMode", mode == "relax", "🐢"),
                button("Reset Settings", "MJ::Settings::ResetSettings"),
            ],
        },
    ]
