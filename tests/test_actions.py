"""The catalogue of result buttons (gouache.actions): kinds, layout, labels, costs, modal input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gouache.actions import (
    DEFAULT_COSTS,
    Kind,
    ResultButton,
    check_custom_zoom,
    check_remix_prompt,
    comfyui_buttons,
    content_kind,
    cost_of,
    is_grid,
    kind_of,
    parse_zoom,
    read_buttons,
    zoom_prefill,
)
from gouache.errors import InvalidParameter

H = "0c62e57f-6b7f-4bad-9524-77bb78ee793a"


@pytest.mark.parametrize(
    ("custom_id", "kind"),
    [
        (f"MJ::JOB::upsample::3::{H}", Kind.UPSCALE),
        (f"MJ::JOB::variation::1::{H}", Kind.VARIATION),
        (f"MJ::JOB::reroll::0::{H}::SOLO", Kind.REROLL),
        (f"MJ::JOB::low_variation::1::{H}::SOLO", Kind.VARY_SUBTLE),
        (f"MJ::JOB::high_variation::1::{H}::SOLO", Kind.VARY_STRONG),
        (f"MJ::Inpaint::1::{H}::SOLO", Kind.VARY_REGION),
        (f"MJ::JOB::upsample_v6_2x_subtle::1::{H}::SOLO", Kind.UPSCALE_SUBTLE),
        (f"MJ::JOB::upsample_v7_2x_creative::1::{H}::SOLO", Kind.UPSCALE_CREATIVE),
        (f"MJ::JOB::upsample_v6_1_2x_creative::1::{H}::SOLO", Kind.UPSCALE_CREATIVE),
        (f"MJ::Outpaint::50::1::{H}::SOLO", Kind.ZOOM_OUT_2X),
        (f"MJ::Outpaint::75::1::{H}::SOLO", Kind.ZOOM_OUT_1_5X),
        (f"MJ::Outpaint::100::1::{H}::SOLO", Kind.MAKE_SQUARE),
        (f"MJ::CustomZoom::{H}", Kind.CUSTOM_ZOOM),
        (f"MJ::JOB::pan_left::1::{H}::SOLO", Kind.PAN_LEFT),
        (f"MJ::JOB::pan_down::1::{H}::SOLO", Kind.PAN_DOWN),
        (f"MJ::BOOKMARK::{H}", Kind.BOOKMARK),
        (f"MJ::JOB::animate_high::1::{H}::SOLO", Kind.UNKNOWN),
    ],
)
def test_custom_ids_map_to_kinds(custom_id: str, kind: Kind) -> None:
    assert kind_of(custom_id) is kind


def _btn(label: str, cid: str, emoji: str | None = None, style: int = 2) -> dict[str, object]:
    out: dict[str, object] = {"type": 2, "style": style, "custom_id": cid, "label": label}
    if emoji:
        out["emoji"] = {"name": emoji}
    return out


def test_read_buttons_keeps_layout_leaves_out_bookmark_and_region_and_keeps_links() -> None:
    components = [
        {
            "type": 1,
            "components": [
                _btn("Vary (Subtle)", f"MJ::JOB::low_variation::1::{H}::SOLO", "🪄"),
                _btn("Vary (Region)", f"MJ::Inpaint::1::{H}::SOLO", "🖌️"),
            ],
        },
        {"type": 1, "components": [_btn("", f"MJ::BOOKMARK::{H}", "❤️")]},
        {
            "type": 1,
            "components": [
                _btn("Animate", f"MJ::JOB::animate::1::{H}::SOLO", style=1),
                {"type": 2, "style": 5, "label": "Web", "url": "https://www.midjourney.com/jobs/x"},
                {"type": 3, "custom_id": "a select"},
            ],
        },
    ]
    buttons = read_buttons(components)
    assert [(b.kind, b.row) for b in buttons] == [
        ("vary_subtle", 0),
        ("unknown", 1),  # rows closed up after the bookmark's row was left out
        ("link", 1),
    ]
    unknown, link = buttons[1], buttons[2]
    assert unknown.label_for("zh-CN") == "Animate" and unknown.style == 1
    assert link.is_link and link.url == "https://www.midjourney.com/jobs/x"
    assert buttons[0].label_for("en-US") == "Vary (Subtle)"
    assert buttons[0].label_for("zh-CN") == "微调变化"
    assert ResultButton.from_dict(buttons[0].as_dict()) == buttons[0]


def test_grid_buttons_translate_with_their_index() -> None:
    grid = read_buttons(
        [
            {
                "type": 1,
                "components": [_btn(f"U{n}", f"MJ::JOB::upsample::{n}::{H}") for n in (1, 2)],
            },
            {"type": 1, "components": [_btn("", f"MJ::JOB::reroll::0::{H}::SOLO", "🔄")]},
        ]
    )
    assert [b.label_for("zh-CN") for b in grid[:2]] == ["放大1", "放大2"]
    assert grid[2].emoji_for() == "🔄" and grid[2].remix
    assert is_grid(grid) and not is_grid(grid[2:])


@given(
    st.recursive(
        st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_read_buttons_never_raises(components: object) -> None:
    read_buttons(components)


def test_costs_default_configured_and_unknown() -> None:
    assert all(cost >= 1 for cost in DEFAULT_COSTS.values())
    assert cost_of("upscale") == 1 and cost_of("upscale_creative") == 2
    assert cost_of("zoom_out_2x", {"zoom_out_2x": 3}) == 3
    assert cost_of("something_new") == 1
    assert cost_of("something_new", {"unknown": 4}) == 4


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        ("**a fox** - Upscaled (Creative) by <@1> (fast)", "upscale_creative"),
        ("**a fox** - Upscaled (Subtle) by <@1> (fast)", "upscale_subtle"),
        ("**a fox --zoom 2** - Zoom Out by <@1> (fast)", "zoom_out"),
        ("**a fox** - Pan Left by <@1> (fast)", "pan_left"),
        ("**a fox** - Variations (Strong) by <@1> (fast)", "vary_strong"),
        ("**a fox** - Remix (Strong) by <@1> (fast)", "remix"),
        ("**a fox** - Image #2 <@1>", "upscale"),
        ("**a fox** - <@1> (fast)", None),
    ],
)
def test_content_lines_say_what_a_result_is(content: str, kind: str | None) -> None:
    assert content_kind(content) == kind


def test_zoom_input() -> None:
    assert zoom_prefill("a fox --ar 3:2 --zoom 1.2") == "a fox --ar 3:2 --zoom 2"
    assert parse_zoom("x --zoom 1") == 1.0 and parse_zoom("x --zoom 2.0") == 2.0
    for bad in ("x", "x --zoom 2.01", "x --zoom 0.99", "x --zoom big"):
        with pytest.raises(InvalidParameter):
            parse_zoom(bad)
    assert check_custom_zoom("  a   fox --zoom 1.5 ") == "a fox --zoom 1.5"
    with pytest.raises(InvalidParameter):
        check_custom_zoom("--zoom 1.5")


def test_remix_prompt_must_not_be_empty() -> None:
    assert check_remix_prompt(" a  blue fox ") == "a blue fox"
    for bad in ("", "   ", "\n"):
        with pytest.raises(InvalidParameter):
            check_remix_prompt(bad)


def test_comfyui_buttons_follow_the_configured_actions_in_a_fixed_order() -> None:
    buttons = comfyui_buttons(["reroll", "zoom_out", "upscale"])
    assert [b.custom_id for b in buttons] == ["upscale", "zoom_out", "reroll"]
    assert [b.label_for("en") for b in buttons] == ["Upscale", "Zoom Out", ""]
    assert buttons[2].emoji_for() == "🔄"
