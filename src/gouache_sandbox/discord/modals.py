"""Modals in the sandbox, with Discord's rules: what an app may open, and what a submit must match.

An application opens a modal in answer to an interaction: a bot with callback
type 9, an in-sandbox app (the Midjourney stand-in) with
``INTERACTION_MODAL_CREATE`` on the user's gateway. The person (a simulated
member, or a user account's ``POST /interactions`` type 5) then submits it,
naming the modal (``data.id`` for a user account), its ``custom_id`` and a
value for its text inputs; Discord refuses a submit whose ids do not match,
whose required input is empty or whose value breaks the input's length limits
(400, 50035 Invalid Form Body). A modal is answered once; closing it tells the
app nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gouache_sandbox.discord.state import JSON, DiscordAPIError, invalid_form

MAX_TITLE = 45
MAX_LABEL = 45
MAX_VALUE = 4000


@dataclass
class TextInput:
    """One text input of an open modal."""

    custom_id: str
    label: str
    style: int = 1
    value: str = ""
    required: bool = True
    min_length: int = 0
    max_length: int = MAX_VALUE


@dataclass
class PendingModal:
    """A modal a person has in front of them."""

    id: int
    application_id: int
    user_id: int
    channel_id: int
    custom_id: str
    title: str
    inputs: list[TextInput] = field(default_factory=list)
    #: The interaction the modal answered.
    interaction_id: int | None = None

    def payload(self) -> JSON:
        """The modal as ``INTERACTION_MODAL_CREATE`` carries it (and a client renders it)."""
        return {
            "id": str(self.id),
            "custom_id": self.custom_id,
            "title": self.title,
            "channel_id": str(self.channel_id),
            "application": {"id": str(self.application_id)},
            "components": [
                {
                    "type": 1,
                    "components": [
                        {
                            "type": 4,
                            "custom_id": i.custom_id,
                            "label": i.label,
                            "style": i.style,
                            "value": i.value,
                            "required": i.required,
                            "min_length": i.min_length,
                            "max_length": i.max_length,
                        }
                    ],
                }
                for i in self.inputs
            ],
        }


def _inputs_of(rows: Any, where: str) -> list[TextInput]:
    if not isinstance(rows, list) or not 1 <= len(rows) <= 5:
        raise invalid_form(f"{where}.components", "BASE_TYPE_BAD_LENGTH", "Must be 1 to 5 rows")
    inputs: list[TextInput] = []
    for n, row in enumerate(rows):
        inner = row.get("components") if isinstance(row, dict) and row.get("type") == 1 else None
        if not isinstance(inner, list) or len(inner) != 1 or not isinstance(inner[0], dict):
            raise invalid_form(
                f"{where}.components.{n}", "MODAL_ROW_INVALID", "A row holds one text input"
            )
        item = inner[0]
        cid, label = item.get("custom_id"), item.get("label", "")
        if item.get("type") != 4 or not isinstance(cid, str) or not 1 <= len(cid) <= 100:
            raise invalid_form(
                f"{where}.components.{n}.components.0", "COMPONENT_INVALID", "Invalid text input"
            )
        if not isinstance(label, str) or len(label) > MAX_LABEL or item.get("style") not in (1, 2):
            raise invalid_form(
                f"{where}.components.{n}.components.0", "COMPONENT_INVALID", "Invalid text input"
            )
        max_length = int(item.get("max_length") or MAX_VALUE)
        value = item.get("value") or ""
        if not isinstance(value, str) or len(value) > max_length:
            raise invalid_form(
                f"{where}.components.{n}.components.0.value", "BASE_TYPE_MAX_LENGTH", "Too long"
            )
        inputs.append(
            TextInput(
                custom_id=cid,
                label=label,
                style=int(item["style"]),
                value=value,
                required=bool(item.get("required", True)),
                min_length=int(item.get("min_length") or 0),
                max_length=max_length,
            )
        )
    return inputs


def modal_from_callback(  # noqa: PLR0913
    data: JSON, *, modal_id: int, application_id: int, user_id: int, channel_id: int, inter_id: int
) -> PendingModal:
    """A bot's callback type 9 (``{custom_id, title, components}``), checked as Discord does."""
    cid, title = data.get("custom_id"), data.get("title")
    if not isinstance(cid, str) or not 1 <= len(cid) <= 100:
        raise invalid_form("data.custom_id", "BASE_TYPE_BAD_LENGTH", "Must be 1 to 100 long")
    if not isinstance(title, str) or not 1 <= len(title) <= MAX_TITLE:
        raise invalid_form("data.title", "BASE_TYPE_BAD_LENGTH", "Must be 1 to 45 long")
    return PendingModal(
        id=modal_id,
        application_id=application_id,
        user_id=user_id,
        channel_id=channel_id,
        custom_id=cid,
        title=title,
        inputs=_inputs_of(data.get("components"), "data"),
        interaction_id=inter_id,
    )


def check_submit(modal: PendingModal, custom_id: Any, rows: Any) -> dict[str, str]:
    """The values of a submit of ``modal``, or a 400 for wrong ids, an empty required input or a bad length."""
    if custom_id != modal.custom_id:
        raise invalid_form("data.custom_id", "MODAL_CUSTOM_ID_MISMATCH", "Unknown modal")
    given: dict[str, str] = {}
    for row in rows if isinstance(rows, list) else []:
        inner = row.get("components") if isinstance(row, dict) else None
        for item in inner if isinstance(inner, list) else []:
            if not isinstance(item, dict) or item.get("type") != 4:
                raise invalid_form("data.components", "COMPONENT_INVALID", "Invalid component")
            cid, value = item.get("custom_id"), item.get("value")
            if not isinstance(cid, str) or not isinstance(value, str):
                raise invalid_form("data.components", "COMPONENT_INVALID", "Invalid component")
            given[cid] = value
    expected = {i.custom_id: i for i in modal.inputs}
    if set(given) != set(expected):
        raise invalid_form(
            "data.components", "COMPONENT_VALIDATION_FAILED", "Component validation failed"
        )
    for cid, value in given.items():
        spec = expected[cid]
        if spec.required and not value.strip():
            raise invalid_form("data.components", "BASE_TYPE_REQUIRED", "This field is required")
        if len(value) > spec.max_length or (value and len(value) < spec.min_length):
            raise invalid_form("data.components", "BASE_TYPE_BAD_LENGTH", "Bad length")
    return given


def submit_rows(values: dict[str, str]) -> list[JSON]:
    """A modal submit's ``components`` for ``values`` (input custom id → value)."""
    return [
        {"type": 1, "components": [{"type": 4, "custom_id": cid, "value": value}]}
        for cid, value in values.items()
    ]


def unknown_modal() -> DiscordAPIError:
    """What Discord answers a submit of a modal that is not open (closed, answered, never opened)."""
    return invalid_form("data.id", "MODAL_UNKNOWN", "Unknown modal")
