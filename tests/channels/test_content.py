"""Content rules: adult prompts per channel, the shipped word list and an operator's own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gouache.channels.content import AdultWords, decide_content, shipped_words
from gouache.errors import ConfigError


@pytest.mark.parametrize(
    ("rule", "adult", "nsfw", "expected"),
    [
        (None, False, False, "allow"),
        (None, True, False, "refuse"),
        (None, True, True, "allow"),
        ("spoiler", True, False, "spoiler"),
        ("refuse", True, True, "refuse"),
        ("allow", True, False, "allow"),
        ("refuse", False, False, "allow"),
    ],
)
def test_the_rule_decides_adult_prompts_only(
    rule: str | None, adult: bool, nsfw: bool, expected: str
) -> None:
    assert decide_content(rule, adult=adult, nsfw_channel=nsfw) == expected  # type: ignore[arg-type]


def test_shipped_words_match_whole_words_in_any_case() -> None:
    words = AdultWords()
    assert "nude" in shipped_words()
    assert words.find("A NUDE portrait") == "nude"
    assert words.find("a nudibranch on a reef", "the sextant of a ship") is None
    assert words.find("一张裸体素描") == "裸体"


def test_an_operators_list_replaces_the_shipped_one_and_is_reread(tmp_path: Path) -> None:
    path = tmp_path / "adult.txt"
    path.write_text("# mine\nspicy\n", encoding="utf-8")
    words = AdultWords(path)
    words.load()
    assert words.find("a spicy scene") == "spicy"
    assert words.find("a nude") is None  # the shipped list is not in force
    path.write_text("velvet\n", encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    words._file.check_interval_s = 0  # type: ignore[union-attr]
    assert words.find("velvet rope") == "velvet"


def test_an_unreadable_list_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        AdultWords(tmp_path / "missing.txt").load()
