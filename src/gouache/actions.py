"""The buttons a result offers: Midjourney's, read from its message, and ComfyUI's, from config.

A result keeps its backend's buttons as `ResultButton` values in
``job.meta["buttons"]`` (plain dicts, so both stores keep them as JSON). The
bot renders them in the backend's layout; a click becomes a follow-up job
(`gouache.jobs.Action.BUTTON`) that carries the button's ``custom_id``
verbatim (Midjourney) or the action's name (ComfyUI).

What is known here, as data (no I/O):

- `KINDS`: every button kind gouache knows, with its labels in English and
  Simplified Chinese and what it needs from the member (a modal for Custom
  Zoom; with Remix mode on, a prompt for V, 🔄, Vary, pan and zoom);
- `kind_of`: Midjourney's ``custom_id`` patterns → a kind. Exact ids change
  between Midjourney versions (``upsample_v6_2x_subtle`` today,
  ``upsample_v7_2x_subtle`` tomorrow), so the patterns are loose, and a button
  no pattern knows is kept as `UNKNOWN`: it is relayed as it is and keeps
  Midjourney's label;
- `read_buttons`: a Midjourney message's components → buttons, leaving out
  the ones that make no sense outside Midjourney's own server (❤️ bookmark,
  Vary (Region), which opens Midjourney's web editor); link buttons stay links;
- `DEFAULT_COSTS` / `cost_of`: what a click costs against the daily limit
  (``[queue.action_costs]`` overrides it);
- `content_kind`: what a Midjourney result line says it is ("Upscaled
  (Creative) by", "Zoom Out by", "Pan Left by", "Variations (Strong) by",
  "Remix"), for matching and logs;
- `parse_zoom`, `check_remix_prompt`: the member's modal input, validated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final

from gouache.errors import InvalidParameter


class Kind(StrEnum):
    """A button kind gouache knows."""

    UPSCALE = "upscale"  # U1–U4: one image of a grid
    VARIATION = "variation"  # V1–V4
    REROLL = "reroll"  # 🔄
    VARY_SUBTLE = "vary_subtle"
    VARY_STRONG = "vary_strong"
    VARY_REGION = "vary_region"
    UPSCALE_SUBTLE = "upscale_subtle"
    UPSCALE_CREATIVE = "upscale_creative"
    ZOOM_OUT_2X = "zoom_out_2x"
    ZOOM_OUT_1_5X = "zoom_out_1_5x"
    CUSTOM_ZOOM = "custom_zoom"
    MAKE_SQUARE = "make_square"
    PAN_LEFT = "pan_left"
    PAN_RIGHT = "pan_right"
    PAN_UP = "pan_up"
    PAN_DOWN = "pan_down"
    BOOKMARK = "bookmark"
    LINK = "link"
    # ComfyUI's actions (``[comfyui.actions]``) that Midjourney names differently.
    UPSCALE_2X = "upscale_2x"
    ZOOM_OUT = "zoom_out"
    PAN = "pan"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class KindInfo:
    """What gouache knows of a kind: labels (en, zh-CN), emoji, what it asks of the member."""

    en: str
    zh: str
    emoji: str | None = None
    #: Always opens a modal (Custom Zoom).
    modal: bool = False
    #: Opens a modal when the account's Remix mode is on.
    remix: bool = False
    #: Makes a grid of four (U/V buttons on the result), as opposed to one image.
    grid: bool = True


KINDS: Final[dict[Kind, KindInfo]] = {
    Kind.UPSCALE: KindInfo("U{n}", "放大{n}", grid=False),
    Kind.VARIATION: KindInfo("V{n}", "变体{n}", remix=True),
    Kind.REROLL: KindInfo("", "", emoji="🔄", remix=True),
    Kind.VARY_SUBTLE: KindInfo("Vary (Subtle)", "微调变化", emoji="🪄", remix=True),
    Kind.VARY_STRONG: KindInfo("Vary (Strong)", "强烈变化", emoji="🪄", remix=True),
    Kind.VARY_REGION: KindInfo("Vary (Region)", "局部重绘", emoji="🖌️"),
    Kind.UPSCALE_SUBTLE: KindInfo("Upscale (Subtle)", "放大（细微）", grid=False),
    Kind.UPSCALE_CREATIVE: KindInfo("Upscale (Creative)", "放大（创意）", grid=False),
    Kind.ZOOM_OUT_2X: KindInfo("Zoom Out 2x", "缩小 2 倍", emoji="🔍", remix=True),
    Kind.ZOOM_OUT_1_5X: KindInfo("Zoom Out 1.5x", "缩小 1.5 倍", emoji="🔍", remix=True),
    Kind.CUSTOM_ZOOM: KindInfo("Custom Zoom", "自定义缩放", emoji="🔍", modal=True),
    Kind.MAKE_SQUARE: KindInfo("Make Square", "变为方形", emoji="↔️"),
    Kind.PAN_LEFT: KindInfo("", "", emoji="⬅️", remix=True),
    Kind.PAN_RIGHT: KindInfo("", "", emoji="➡️", remix=True),
    Kind.PAN_UP: KindInfo("", "", emoji="⬆️", remix=True),
    Kind.PAN_DOWN: KindInfo("", "", emoji="⬇️", remix=True),
    Kind.BOOKMARK: KindInfo("", "", emoji="❤️"),
    Kind.LINK: KindInfo("Web", "网页"),
    Kind.UPSCALE_2X: KindInfo("Upscale", "放大", grid=False),
    Kind.ZOOM_OUT: KindInfo("Zoom Out", "缩小", emoji="🔍"),
    Kind.PAN: KindInfo("Pan", "扩展", emoji="➡️"),
    Kind.UNKNOWN: KindInfo("", ""),
}

#: Kinds left out of our copy of a Midjourney result: they only work in Midjourney's own server.
LEFT_OUT: Final = frozenset({Kind.BOOKMARK, Kind.VARY_REGION})

#: ComfyUI action names (``[comfyui.actions]``), in the order their buttons are shown.
COMFYUI_ACTIONS: Final = ("upscale", "vary_subtle", "vary_strong", "zoom_out", "pan", "reroll")

#: What a click costs against the daily limit, by kind (a new grid costs 1, like /imagine).
#: An upscale (crop) of a grid costs 1 too; the 2× upscales redo the whole image at twice
#: the size, so they cost 2. Unknown buttons cost what a new grid does.
DEFAULT_COSTS: Final[dict[str, int]] = {
    Kind.UPSCALE: 1,
    Kind.VARIATION: 1,
    Kind.REROLL: 1,
    Kind.VARY_SUBTLE: 1,
    Kind.VARY_STRONG: 1,
    Kind.UPSCALE_SUBTLE: 2,
    Kind.UPSCALE_CREATIVE: 2,
    Kind.ZOOM_OUT_2X: 1,
    Kind.ZOOM_OUT_1_5X: 1,
    Kind.CUSTOM_ZOOM: 1,
    Kind.MAKE_SQUARE: 1,
    Kind.PAN_LEFT: 1,
    Kind.PAN_RIGHT: 1,
    Kind.PAN_UP: 1,
    Kind.PAN_DOWN: 1,
    Kind.UPSCALE_2X: 1,
    Kind.ZOOM_OUT: 1,
    Kind.PAN: 1,
    Kind.UNKNOWN: 1,
}

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_RULES: Final[tuple[tuple[re.Pattern[str], Kind], ...]] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (r"^MJ::JOB::upsample::[1-4]::", Kind.UPSCALE),
        (r"^MJ::JOB::variation::[1-4]::", Kind.VARIATION),
        (r"^MJ::JOB::reroll::", Kind.REROLL),
        (r"^MJ::JOB::low_variation::", Kind.VARY_SUBTLE),
        (r"^MJ::JOB::high_variation::", Kind.VARY_STRONG),
        (r"^MJ::Inpaint::", Kind.VARY_REGION),
        (r"^MJ::JOB::upsample_v\d+(?:_\d+)?_2x_subtle::", Kind.UPSCALE_SUBTLE),
        (r"^MJ::JOB::upsample_v\d+(?:_\d+)?_2x_creative::", Kind.UPSCALE_CREATIVE),
        (r"^MJ::Outpaint::50::", Kind.ZOOM_OUT_2X),
        (r"^MJ::Outpaint::75::", Kind.ZOOM_OUT_1_5X),
        (r"^MJ::Outpaint::100::", Kind.MAKE_SQUARE),
        (r"^MJ::CustomZoom::", Kind.CUSTOM_ZOOM),
        (r"^MJ::JOB::pan_left::", Kind.PAN_LEFT),
        (r"^MJ::JOB::pan_right::", Kind.PAN_RIGHT),
        (r"^MJ::JOB::pan_up::", Kind.PAN_UP),
        (r"^MJ::JOB::pan_down::", Kind.PAN_DOWN),
        (r"^MJ::BOOKMARK::", Kind.BOOKMARK),
    )
)
_INDEX = re.compile(r"^MJ::JOB::(?:upsample|variation)::([1-4])::")
_HASH = re.compile(_UUID, re.IGNORECASE)
_ZOOM = re.compile(r"(?:^|\s)--zoom\s+(\S+)", re.IGNORECASE)
MIN_ZOOM: Final = 1.0
MAX_ZOOM: Final = 2.0


def kind_of(custom_id: str) -> Kind:
    """The kind of a Midjourney button by its ``custom_id`` (`UNKNOWN` if no pattern knows it)."""
    for pattern, kind in _RULES:
        if pattern.match(custom_id):
            return kind
    return Kind.UNKNOWN


def index_of(custom_id: str) -> int | None:
    """The image (1–4) a U/V button acts on."""
    m = _INDEX.match(custom_id)
    return int(m.group(1)) if m else None


def hash_of(custom_id: str) -> str | None:
    """The Midjourney job hash a button acts on, if its id names one."""
    m = _HASH.search(custom_id)
    return m.group(0).lower() if m else None


@dataclass(frozen=True, slots=True)
class ResultButton:
    """One button under a result, as kept in ``job.meta["buttons"]``.

    ``custom_id`` is Midjourney's id (relayed verbatim) or, for ComfyUI, the
    action's name; ``url`` makes it a link button. ``label`` and ``emoji`` are
    the backend's own; known kinds are shown with our translated label.
    """

    kind: str
    custom_id: str = ""
    label: str = ""
    emoji: str | None = None
    style: int = 2
    row: int = 0
    url: str | None = None
    index: int | None = None

    @property
    def known(self) -> Kind:
        """The kind as a `Kind` (`UNKNOWN` for a kind this version does not know)."""
        try:
            return Kind(self.kind)
        except ValueError:
            return Kind.UNKNOWN

    @property
    def is_link(self) -> bool:
        """A link button: opens ``url``, no click reaches us."""
        return self.url is not None

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able form kept in job meta."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultButton:
        """Read back `as_dict` (unknown keys are ignored, so old records still load)."""
        index = data.get("index")
        return cls(
            kind=str(data.get("kind") or Kind.UNKNOWN),
            custom_id=str(data.get("custom_id") or ""),
            label=str(data.get("label") or ""),
            emoji=str(data["emoji"]) if data.get("emoji") else None,
            style=int(data.get("style") or 2),
            row=int(data.get("row") or 0),
            url=str(data["url"]) if data.get("url") else None,
            index=int(index) if isinstance(index, int) else None,
        )

    def label_for(self, locale: str) -> str:
        """The label a member sees: ours, translated, for known kinds; the backend's otherwise."""
        info = KINDS.get(self.known)
        if info is None or self.known is Kind.UNKNOWN:
            return self.label
        text = info.zh if locale.lower().startswith("zh") else info.en
        return text.format(n=self.index or "") if text else self.label

    def emoji_for(self) -> str | None:
        """The emoji shown: the backend's own, else ours."""
        if self.emoji:
            return self.emoji
        info = KINDS.get(self.known)
        return info.emoji if info is not None and not self.label_for("en") else None

    @property
    def modal(self) -> bool:
        """Whether a click always asks the member first (Custom Zoom)."""
        return KINDS[self.known].modal

    @property
    def remix(self) -> bool:
        """Whether a click asks the member for a prompt when Remix mode is on."""
        return KINDS[self.known].remix

    @property
    def makes_grid(self) -> bool:
        """Whether the result is a grid of four (unknown buttons: assume so, read it back anyway)."""
        return KINDS[self.known].grid


def _emoji(raw: Any) -> str | None:
    if isinstance(raw, Mapping):
        name = raw.get("name")
        return str(name) if name else None
    return None


def read_buttons(components: Any) -> list[ResultButton]:
    """Midjourney's buttons from a message's ``components``, in its rows and order.

    ❤️ (bookmark) and Vary (Region) are left out (`LEFT_OUT`); link buttons
    (style 5) stay links; anything else is kept, known or not.
    """
    out: list[ResultButton] = []
    rows = components if isinstance(components, list) else []
    for row_no, row in enumerate(rows):
        inner = row.get("components") if isinstance(row, Mapping) else None
        for item in inner if isinstance(inner, list) else []:
            button = _read_one(item, row_no)
            if button is not None:
                out.append(button)
    return _renumber(out)


def _read_one(item: Any, row: int) -> ResultButton | None:
    if not isinstance(item, Mapping) or item.get("type") != 2:
        return None
    label = str(item.get("label") or "")
    emoji = _emoji(item.get("emoji"))
    url = item.get("url")
    if isinstance(url, str) and url:
        return ResultButton(kind=Kind.LINK, label=label, emoji=emoji, style=5, row=row, url=url)
    cid = item.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return None
    kind = kind_of(cid)
    if kind in LEFT_OUT:
        return None
    style = item.get("style")
    return ResultButton(
        kind=kind.value,
        custom_id=cid,
        label=label,
        emoji=emoji,
        style=style if isinstance(style, int) and 1 <= style <= 4 else 2,
        row=row,
        index=index_of(cid),
    )


def _renumber(buttons: list[ResultButton]) -> list[ResultButton]:
    """Close the gaps left-out buttons leave: rows numbered 0.. in order, none empty."""
    seen: dict[int, int] = {}
    out: list[ResultButton] = []
    for b in buttons:
        row = seen.setdefault(b.row, len(seen))
        out.append(
            ResultButton(b.kind, b.custom_id, b.label, b.emoji, b.style, row, b.url, b.index)
        )
    return out


def comfyui_buttons(actions: Iterable[str]) -> list[ResultButton]:
    """The buttons of a ComfyUI result: one per configured action, in `COMFYUI_ACTIONS` order."""
    have = set(actions)
    names = [a for a in COMFYUI_ACTIONS if a in have]
    return [
        ResultButton(
            kind=comfyui_kind(name).value,
            custom_id=name,
            row=n // 5,
            style=1 if name == "reroll" else 2,
        )
        for n, name in enumerate(names)
    ]


def comfyui_kind(name: str) -> Kind:
    """The button kind of a ComfyUI action name."""
    return {
        "upscale": Kind.UPSCALE_2X,
        "vary_subtle": Kind.VARY_SUBTLE,
        "vary_strong": Kind.VARY_STRONG,
        "zoom_out": Kind.ZOOM_OUT,
        "pan": Kind.PAN,
        "reroll": Kind.REROLL,
    }.get(name, Kind.UNKNOWN)


def is_grid(buttons: Iterable[ResultButton]) -> bool:
    """A result is a grid when it offers U1–U4."""
    return any(b.known is Kind.UPSCALE and b.index for b in buttons)


def cost_of(kind: str, costs: Mapping[str, int] | None = None) -> int:
    """What a click of ``kind`` costs: the configured cost, else the default, else a grid's."""
    if costs and kind in costs:
        return costs[kind]
    if costs and Kind.UNKNOWN in costs and kind not in DEFAULT_COSTS:
        return costs[Kind.UNKNOWN]
    return DEFAULT_COSTS.get(kind, DEFAULT_COSTS[Kind.UNKNOWN])


_CONTENT: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (r"Upscaled \(Subtle\) by", Kind.UPSCALE_SUBTLE),
        (r"Upscaled \(Creative\) by", Kind.UPSCALE_CREATIVE),
        (r"Variations \(Strong\) by", Kind.VARY_STRONG),
        (r"Variations \(Subtle\) by", Kind.VARY_SUBTLE),
        (r"Variations \(Region\) by", Kind.VARY_REGION),
        (r"Variations by", Kind.VARIATION),
        (r"Zoom Out by", Kind.ZOOM_OUT),
        (r"Make Square by", Kind.MAKE_SQUARE),
        (r"Pan (Left|Right|Up|Down) by", Kind.PAN),
        (r"Image #[1-4]", Kind.UPSCALE),
        (r"\bRemix\b", "remix"),
    )
)


def content_kind(content: str) -> str | None:
    """What a Midjourney result line says it is ("Zoom Out by", "Pan Left by", …), if anything.

    Remix mode adds "(Remix)" to a variation's or pan's line; it is reported as
    ``"remix"`` only when no other kind is named.
    """
    for pattern, kind in _CONTENT:
        m = pattern.search(content or "")
        if m:
            if kind is Kind.PAN:
                return f"pan_{m.group(1).lower()}"
            return str(kind)
    return None


def parse_zoom(value: str) -> float:
    """The ``--zoom`` factor of a Custom Zoom prompt, checked to be 1.0–2.0."""
    m = _ZOOM.search(value or "")
    if m is None:
        raise InvalidParameter("Custom Zoom needs --zoom with a value from 1.0 to 2.0.")
    try:
        zoom = float(m.group(1))
    except ValueError:
        raise InvalidParameter(
            f"--zoom must be a number from 1.0 to 2.0, not {m.group(1)!r}."
        ) from None
    if not MIN_ZOOM <= zoom <= MAX_ZOOM:
        raise InvalidParameter(f"--zoom must be from 1.0 to 2.0 (got {m.group(1)}).")
    return zoom


def check_custom_zoom(value: str) -> str:
    """A Custom Zoom modal's input, normalised: a prompt and a valid ``--zoom``."""
    text = " ".join((value or "").split())
    parse_zoom(text)
    if not _ZOOM.sub(" ", text).strip():
        raise InvalidParameter("Custom Zoom needs a prompt besides --zoom.")
    return text


def check_remix_prompt(value: str) -> str:
    """A Remix modal's new prompt, normalised: not empty."""
    text = " ".join((value or "").split())
    if not text:
        raise InvalidParameter("The new prompt must not be empty.")
    return text


def zoom_prefill(prompt: str) -> str:
    """What the Custom Zoom modal shows first: the prompt with ``--zoom 2``."""
    base = _ZOOM.sub(" ", prompt).strip()
    return f"{base} --zoom 2"
