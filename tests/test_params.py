"""Midjourney-style parameter parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gouache.errors import InvalidParameter, PromptRejected
from gouache.params import Params, parse_prompt


def test_full_parameter_set() -> None:
    p = parse_prompt("a red fox in snow --ar 16:9 --seed 42 --no text, watermark --chaos 20 --v 7")
    assert p.text == "a red fox in snow"
    assert p.params == Params(
        aspect=(16, 9), seed=42, no=("text", "watermark"), chaos=20, version="7"
    )
    assert (
        p.render() == "a red fox in snow --ar 16:9 --seed 42 --no text, watermark --chaos 20 --v 7"
    )


def test_em_dash_and_aliases() -> None:
    p = parse_prompt("castle \u2014ar 3:2 \u2014s 250 --niji 6 --tile")
    assert p.params.aspect == (3, 2)
    assert p.params.stylize == 250
    assert p.params.niji == "6"
    assert p.params.tile is True


def test_plain_prompt_has_no_params() -> None:
    p = parse_prompt("  a   cat  ")
    assert p.text == "a cat"
    assert p.params == Params()
    assert p.render() == "a cat"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("cat --ar 16x9", "--ar must look like 16:9"),
        ("cat --ar 20:1", "too extreme"),
        ("cat --seed -1", "between 0 and"),
        ("cat --seed abc", "--seed needs a whole number"),
        ("cat --seed 99999999999", "between 0 and 4294967295"),
        ("cat --chaos 101", "between 0 and 100"),
        ("cat --v 9", "must be one of"),
        ("cat --q 3", "must be one of"),
        ("cat --foo 1", "Unknown parameter --foo"),
        ("cat --seed 1 --seed 2", "given twice"),
        ("cat --tile yes", "takes no value"),
        ("cat --niji 6 --v 6", "either --niji or --v"),
        ("cat --no", "--no needs a value"),
        ("cat --stop 5", "between 10 and 100"),
    ],
)
def test_bad_parameters_have_clear_errors(prompt: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        parse_prompt(prompt)


def test_empty_and_long_prompts_are_rejected() -> None:
    with pytest.raises(PromptRejected, match="needs some words"):
        parse_prompt("--ar 1:1")
    with pytest.raises(PromptRejected, match="too long"):
        parse_prompt("x" * 5000)


@given(
    st.text(
        alphabet=st.characters(blacklist_characters="-\u2014\u2013\u2012\u2015\u2212"), min_size=1
    ).filter(str.strip),
    st.integers(0, 4_294_967_295),
    st.sampled_from([(1, 1), (16, 9), (2, 3)]),
)
def test_render_round_trips(text: str, seed: int, aspect: tuple[int, int]) -> None:
    first = parse_prompt(f"{text} --seed {seed} --ar {aspect[0]}:{aspect[1]}")
    again = parse_prompt(first.render())
    assert again == first
    assert first.params.seed == seed


def test_raw_is_midjourneys_shorthand_for_style_raw() -> None:
    assert parse_prompt("a fox --raw").params.style == "raw"
    with pytest.raises(InvalidParameter, match="twice"):
        parse_prompt("a fox --raw --style raw")
    with pytest.raises(InvalidParameter, match="--raw"):
        parse_prompt("a fox --style raw --raw")
    with pytest.raises(InvalidParameter, match="--raw"):
        parse_prompt("a fox --raw 2")
