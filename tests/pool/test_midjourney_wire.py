"""Reading and writing Midjourney's messages: pure functions, no network."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gouache.jobs import Action, ErrorCode, Job
from gouache.params import Params
from gouache.pool.midjourney_wire import (
    DISCORD_EPOCH_MS,
    ERROR_RULES,
    MIDJOURNEY_APPLICATION_ID,
    QUEUED_COLOR,
    RED,
    UNKNOWN_ERROR,
    CommandRef,
    ErrorRule,
    MessageKind,
    NonceFactory,
    Outcome,
    button_body,
    custom_id,
    find_command,
    hash_from_custom_ids,
    hash_from_filename,
    imagine_body,
    is_stale_command,
    match_error,
    parse_message,
    parse_progress,
    render_prompt,
)

HASH = "0f8fad5b-d9cb-469f-a165-70867728950e"
MJ = {"id": MIDJOURNEY_APPLICATION_ID, "username": "Midjourney Bot", "bot": True}


def message(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "1300",
        "channel_id": "77",
        "author": MJ,
        "content": "",
        "embeds": [],
        "attachments": [],
        "components": [],
    }
    base.update(fields)
    return base


def attachment(name: str, ctype: str = "image/png") -> dict[str, Any]:
    return {
        "id": "9",
        "filename": name,
        "url": f"https://cdn.example/{name}?ex=1",
        "content_type": ctype,
    }


def grid_components(job_hash: str) -> list[dict[str, Any]]:
    ups = [{"type": 2, "custom_id": f"MJ::JOB::upsample::{n}::{job_hash}"} for n in range(1, 5)]
    ups.append({"type": 2, "custom_id": f"MJ::JOB::reroll::0::{job_hash}::SOLO"})
    vs = [{"type": 2, "custom_id": f"MJ::JOB::variation::{n}::{job_hash}"} for n in range(1, 5)]
    return [{"type": 1, "components": ups}, {"type": 1, "components": vs}]


# -- classification -----------------------------------------------------------------------


def test_waiting_message_carries_the_nonce_and_interaction_id() -> None:
    msg = parse_message(
        message(
            content="**a fox --ar 3:2** - <@5> (Waiting to start)",
            nonce="1234",
            interaction_metadata={"id": "555", "type": 2},
        )
    )
    assert msg.kind is MessageKind.WAITING
    assert (msg.nonce, msg.interaction_id, msg.message_id, msg.channel_id) == (
        "1234",
        "555",
        "1300",
        "77",
    )
    assert msg.author_id == MIDJOURNEY_APPLICATION_ID


def test_progress_reads_percent_preview_and_hash() -> None:
    msg = parse_message(
        message(
            content="**a fox** - <@5> (45%) (fast)",
            attachments=[attachment(f"grid_0_{HASH}_preview.png")],
        )
    )
    assert msg.kind is MessageKind.PROGRESS and msg.percent == 45
    assert msg.image_url is not None and msg.image_url.startswith("https://cdn.example/grid_0")
    assert msg.job_hash == HASH


def test_result_is_an_image_without_percentage_and_names_its_hash() -> None:
    msg = parse_message(
        message(
            content="**a fox** - <@5> (fast)",
            attachments=[attachment(f"painter_a_fox_{HASH}.png")],
            components=grid_components(HASH),
            message_reference={"message_id": "1200"},
        )
    )
    assert msg.kind is MessageKind.DONE and msg.job_hash == HASH
    assert msg.reference_id == "1200"
    assert len(msg.custom_ids) == 9
    assert msg.filename == f"painter_a_fox_{HASH}.png"


def test_result_hash_from_the_file_name_when_there_are_no_buttons() -> None:
    msg = parse_message(
        message(content="**a fox** - Image #2 <@5>", attachments=[attachment(f"x_{HASH}.webp", "")])
    )
    assert msg.kind is MessageKind.DONE and msg.job_hash == HASH


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        ("**x** - <@5> (Stopped)", MessageKind.STOPPED),
        ("**x** - <@5> (paused)", MessageKind.WAITING),
        ("**x** - <@5> (relaxed)", MessageKind.OTHER),
        ("", MessageKind.OTHER),
    ],
)
def test_other_contents(content: str, kind: MessageKind) -> None:
    assert parse_message(message(content=content)).kind is kind


def test_a_non_image_attachment_is_not_a_result() -> None:
    msg = parse_message(
        message(content="**x**", attachments=[attachment("notes.txt", "text/plain")])
    )
    assert msg.kind is MessageKind.OTHER and msg.image_url is None


@pytest.mark.parametrize("rule", ERROR_RULES, ids=lambda r: r.title)
def test_every_error_embed_is_recognised(rule: ErrorRule) -> None:
    color = QUEUED_COLOR if rule.outcome is Outcome.WAIT else RED
    msg = parse_message(
        message(
            nonce="1",
            embeds=[{"title": rule.title, "description": "Something `--ar 0:1`", "color": color}],
        )
    )
    expected = MessageKind.QUEUED if rule.outcome is Outcome.WAIT else MessageKind.ERROR
    assert msg.kind is expected and msg.rule is rule
    assert msg.user_error()
    if rule.show_detail:
        assert "--ar 0:1" in msg.user_error()


def test_error_titles_match_loosely_but_not_anything() -> None:
    assert match_error("  invalid   PARAMETERS ") is not None
    assert match_error("Invalid parameters", RED).code == ErrorCode.INVALID_PARAMETER  # type: ignore[union-attr]
    assert match_error("Banned prompt detected").code == ErrorCode.BANNED_PROMPT  # type: ignore[union-attr]
    assert match_error("Subscription paused").outcome is Outcome.QUARANTINE  # type: ignore[union-attr]
    assert match_error("Credits exhausted").outcome is Outcome.CREDITS  # type: ignore[union-attr]
    assert match_error("Job queued").outcome is Outcome.WAIT  # type: ignore[union-attr]
    assert match_error("A friendly tip", 0x00FF00) is None
    assert match_error(None, None) is None
    assert match_error("Something new went wrong", RED) is UNKNOWN_ERROR


def test_an_unknown_red_embed_fails_with_its_title() -> None:
    msg = parse_message(message(embeds=[{"title": "Server melted", "color": RED}]))
    assert msg.kind is MessageKind.ERROR and msg.rule is UNKNOWN_ERROR
    assert "Server melted" in msg.user_error()


def test_a_harmless_embed_does_not_hide_the_content() -> None:
    msg = parse_message(
        message(content="**x** - <@5> (12%)", embeds=[{"title": "Tip", "color": 1}])
    )
    assert msg.kind is MessageKind.PROGRESS and msg.percent == 12


def test_account_problems_and_prompt_problems_are_told_apart() -> None:
    account = {r.title for r in ERROR_RULES if r.outcome is Outcome.QUARANTINE}
    assert account == {
        "Action needed to continue",
        "Pending mod message",
        "Blocked",
        "Plan Cancelled",
        "Subscription required",
        "Subscription paused",
    }
    prompt = {r.title for r in ERROR_RULES if r.outcome is Outcome.FAIL}
    assert prompt == {
        "Invalid prompt",
        "Invalid parameter",
        "Banned prompt",
        "Invalid link",
        "Request cancelled due to output filters",
        "Queue full",
    }
    # Account trouble and a full queue are retried elsewhere; a refused prompt is not.
    retried = {r.title for r in ERROR_RULES if r.retryable}
    assert retried == account | {"Credits exhausted", "Queue full"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "id",
        "content",
        "embeds",
        "attachments",
        "components",
        "nonce",
        "interaction_metadata",
        "message_reference",
        "author",
        "channel_id",
        "title",
        "color",
        "url",
        "filename",
        "custom_id",
    ]
)


@given(st.dictionaries(keys, json_values, max_size=8))
def test_parse_message_never_raises_on_odd_payloads(data: dict[str, Any]) -> None:
    msg = parse_message(data)
    assert isinstance(msg.kind, MessageKind)


# -- small readers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "percent"),
    [
        ("(0%)", 0),
        ("a (7%) b", 7),
        ("(100%)", 100),
        ("(150%)", 100),
        ("(10%) then (20%)", 20),
        ("50%", None),
        ("", None),
    ],
)
def test_parse_progress(content: str, percent: int | None) -> None:
    assert parse_progress(content) == percent


def test_hashes_from_names_and_buttons() -> None:
    assert hash_from_filename(f"u_p_{HASH.upper()}.png") == HASH
    assert hash_from_filename("grid_0.webp") is None
    assert hash_from_custom_ids(["MJ::Other", f"MJ::JOB::variation::2::{HASH}"]) == HASH
    assert hash_from_custom_ids([f"MJ::JOB::upsample_v6_2x_subtle::1::{HASH}::SOLO"]) == HASH
    assert hash_from_custom_ids(["MJ::JOB::upsample::1::not-a-hash"]) is None


def test_custom_ids_for_follow_ups() -> None:
    assert custom_id(Action.UPSCALE, 2, HASH) == f"MJ::JOB::upsample::2::{HASH}"
    assert custom_id(Action.VARIATION, 4, HASH) == f"MJ::JOB::variation::4::{HASH}"
    assert custom_id(Action.REROLL, None, HASH) == f"MJ::JOB::reroll::0::{HASH}::SOLO"
    for bad in (None, 0, 5):
        with pytest.raises(ValueError, match="1-4"):
            custom_id(Action.UPSCALE, bad, HASH)
    with pytest.raises(ValueError, match="not a follow-up"):
        custom_id(Action.IMAGINE, 1, HASH)


INDEX = {
    "applications": [{"id": MIDJOURNEY_APPLICATION_ID}],
    "application_commands": [
        {"id": "1", "application_id": "42", "name": "imagine", "version": "7", "type": 1},
        {
            "id": "938956540159881230",
            "application_id": MIDJOURNEY_APPLICATION_ID,
            "name": "imagine",
            "version": "99",
            "type": 1,
        },
        {
            "id": "3",
            "application_id": MIDJOURNEY_APPLICATION_ID,
            "name": "describe",
            "version": "5",
        },
        "junk",
    ],
}


def test_find_command_takes_our_application_and_name() -> None:
    ref = find_command(INDEX, MIDJOURNEY_APPLICATION_ID, "imagine")
    assert ref == CommandRef("938956540159881230", "99", "imagine", MIDJOURNEY_APPLICATION_ID, 1)
    assert find_command(INDEX, MIDJOURNEY_APPLICATION_ID, "blend") is None
    assert (
        find_command({"application_commands": "nope"}, MIDJOURNEY_APPLICATION_ID, "imagine") is None
    )
    assert find_command(None, MIDJOURNEY_APPLICATION_ID, "imagine") is None
    versionless = {"application_commands": [{"id": "1", "application_id": "5", "name": "imagine"}]}
    assert find_command(versionless, "5", "imagine") is None


def test_stale_command_answers() -> None:
    stale = {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {
            "data": {
                "_errors": [
                    {"code": "INTERACTION_APPLICATION_COMMAND_INVALID_VERSION", "message": "x"}
                ]
            }
        },
    }
    assert is_stale_command(400, stale)
    other = {
        "code": 50035,
        "errors": {"data": {"options": {"_errors": [{"code": "BASE_TYPE_REQUIRED"}]}}},
    }
    assert not is_stale_command(400, other)
    assert is_stale_command(404, {"code": 10063, "message": "Unknown application command"})
    assert not is_stale_command(400, "text")
    assert not is_stale_command(500, {"code": 0})


def test_nonces_are_fresh_snowflakes_even_when_the_clock_stands_still() -> None:
    now = 1_780_000_000_000.0
    nonces = NonceFactory(lambda: now)
    values = [int(nonces()) for _ in range(1000)]
    assert values == sorted(set(values))
    assert (values[0] >> 22) + DISCORD_EPOCH_MS == int(now)
    assert all(len(str(v)) <= 25 for v in values)


def test_render_prompt_adds_parameters_and_the_speed_mode_once() -> None:
    job = Job(user_id=1, prompt="a fox", params=Params(aspect=(16, 9), seed=3))
    assert render_prompt(job, "fast") == "a fox --ar 16:9 --seed 3 --fast"
    assert render_prompt(job, "relax") == "a fox --ar 16:9 --seed 3 --relax"
    assert render_prompt(Job(user_id=1, prompt="a fox --turbo"), "relax") == "a fox --turbo"


def test_bodies_have_the_documented_shape() -> None:
    ref = CommandRef("938956540159881230", "99", "imagine", MIDJOURNEY_APPLICATION_ID)
    body = imagine_body(
        ref, prompt="a fox", guild_id="1", channel_id="2", session_id="s", nonce="9"
    )
    assert body["type"] == 2 and body["application_id"] == MIDJOURNEY_APPLICATION_ID
    assert body["data"] == {
        "version": "99",
        "id": "938956540159881230",
        "name": "imagine",
        "type": 1,
        "options": [{"type": 3, "name": "prompt", "value": "a fox"}],
    }
    assert (body["session_id"], body["nonce"], body["guild_id"], body["channel_id"]) == (
        "s",
        "9",
        "1",
        "2",
    )
    press = button_body(
        application_id=MIDJOURNEY_APPLICATION_ID,
        guild_id="1",
        channel_id="2",
        message_id="3",
        session_id="s",
        nonce="10",
        custom_id="MJ::JOB::upsample::1::h",
    )
    assert press["type"] == 3 and press["message_id"] == "3" and press["message_flags"] == 0
    assert press["data"] == {"component_type": 2, "custom_id": "MJ::JOB::upsample::1::h"}
