"""Midjourney's modals, as plain functions: which ones we answer, and the answer's body.

When a button needs input (Custom Zoom always; V, 🔄, Vary, pan and zoom on an
account whose Remix mode is on), Midjourney answers the button press with an
``INTERACTION_MODAL_CREATE`` dispatch on the account's gateway. By then the
member has already typed their values into gouache's own modal (Discord gives
a bot 3 s to answer a click, far less than Midjourney takes), so the account
submits Midjourney's modal at once with them (``POST /interactions`` type 5).

A modal that is not one of Midjourney's forms (an iframe, a verification,
anything without text inputs) means the account needs a person: the caller
quarantines it, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The custom id prefixes of Midjourney's forms (docs/protocols.md, "Modals").
FORM_PREFIXES = ("MJ::OutpaintCustomZoomModal::", "MJ::RemixModal::", "MJ::PanModal::")


@dataclass(frozen=True, slots=True)
class TextField:
    """One text input of a modal: its id and the value Midjourney prefilled."""

    custom_id: str
    value: str


@dataclass(frozen=True, slots=True)
class MjModal:
    """A Midjourney form: the modal's id (the submit names it) and its text inputs."""

    id: str
    custom_id: str
    fields: tuple[TextField, ...]

    @property
    def kind(self) -> str:
        """``custom_zoom``, ``remix`` or ``pan`` (from the custom id), else ``form``."""
        if self.custom_id.startswith("MJ::OutpaintCustomZoomModal::"):
            return "custom_zoom"
        if self.custom_id.startswith("MJ::RemixModal::"):
            return "remix"
        if self.custom_id.startswith("MJ::PanModal::"):
            return "pan"
        return "form"


def read_modal(data: Mapping[str, Any]) -> MjModal | None:
    """An ``INTERACTION_MODAL_CREATE`` payload as a form we can fill, or None (not a form)."""
    modal_id, custom_id = data.get("id"), data.get("custom_id")
    if not isinstance(modal_id, str | int) or not isinstance(custom_id, str):
        return None
    if not custom_id.startswith("MJ::"):
        return None
    fields: list[TextField] = []
    rows = data.get("components")
    for row in rows if isinstance(rows, list) else []:
        inner = row.get("components") if isinstance(row, Mapping) else None
        for item in inner if isinstance(inner, list) else []:
            if isinstance(item, Mapping) and item.get("type") == 4:
                cid = item.get("custom_id")
                value = item.get("value")
                if isinstance(cid, str):
                    fields.append(TextField(cid, value if isinstance(value, str) else ""))
    if not fields:
        return None
    return MjModal(str(modal_id), custom_id, tuple(fields))


def filled(modal: MjModal, value: str | None) -> list[dict[str, Any]]:
    """The submit's components: the first text input gets the member's value, others keep theirs.

    Midjourney's forms have one text input (the prompt, with ``--zoom`` for
    Custom Zoom); without a value from the member (a Remix modal on an account
    configured as Remix-off) Midjourney's own prefilled value is sent unchanged.
    """
    rows: list[dict[str, Any]] = []
    for n, f in enumerate(modal.fields):
        text = value if n == 0 and value is not None else f.value
        rows.append(
            {"type": 1, "components": [{"type": 4, "custom_id": f.custom_id, "value": text}]}
        )
    return rows


def modal_body(  # noqa: PLR0913
    modal: MjModal,
    value: str | None,
    *,
    application_id: str,
    guild_id: str,
    channel_id: str,
    session_id: str,
    nonce: str,
) -> dict[str, Any]:
    """The ``POST /interactions`` body that submits ``modal`` (type 5, modal submit)."""
    return {
        "type": 5,
        "application_id": application_id,
        "guild_id": guild_id,
        "channel_id": channel_id,
        "session_id": session_id,
        "nonce": nonce,
        "data": {
            "id": modal.id,
            "custom_id": modal.custom_id,
            "components": filled(modal, value),
        },
    }
