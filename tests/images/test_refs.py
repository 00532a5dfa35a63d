"""split_refs: image URLs out of a prompt, the way Midjourney reads them."""

from __future__ import annotations

from gouache.images.refs import split_refs


def test_leading_urls_are_image_prompts() -> None:
    refs = split_refs("https://a.example/1.png https://b.example/2.jpg a red fox --ar 3:2")
    assert refs.prompt_urls == ("https://a.example/1.png", "https://b.example/2.jpg")
    assert refs.text == "a red fox --ar 3:2"
    assert refs.count == 2


def test_sref_and_cref_take_their_urls() -> None:
    refs = split_refs(
        "a fox —sref https://s.example/1.png https://s.example/2.png --cref https://c.example/x.png --cw 50"
    )
    assert refs.style_urls == ("https://s.example/1.png", "https://s.example/2.png")
    assert refs.character_urls == ("https://c.example/x.png",)
    assert refs.text == "a fox --cw 50"


def test_a_url_inside_the_text_stays_text() -> None:
    refs = split_refs("a poster saying https://example.com in big letters")
    assert refs.prompt_urls == () and refs.text.startswith("a poster saying https://")


def test_sref_without_url_is_left_for_the_parser() -> None:
    refs = split_refs("a fox --sref 12345 --ar 1:1")
    assert refs.style_urls == () and refs.text == "a fox --sref 12345 --ar 1:1"
