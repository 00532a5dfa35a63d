"""The configuration file: validation, field paths, secrets from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from gouache.config import load_config, parse_config
from gouache.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"
ENV = {
    "DISCORD_BOT_TOKEN": "bot-token-value-123",
    "MJ_TOKEN_1": "user-token-one-456",
    "MJ_TOKEN_2": "user-token-two-789",
    "GOUACHE_ADMIN_TOKEN": "admin-token-000",
    "REDIS_URL": "redis://:hunter2pw@127.0.0.1:6379/0",
}

MINIMAL = """
[discord]
token = "${DISCORD_BOT_TOKEN}"
application_id = 1234
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=ENV if env is None else env)
    return info.value.problems


def test_example_file_passes_and_every_section_is_documented() -> None:
    config = load_config(EXAMPLE, env=ENV)
    assert config.discord is not None
    assert config.discord.token.get_secret_value() == ENV["DISCORD_BOT_TOKEN"]
    assert len(config.midjourney.accounts) >= 1 and len(config.comfyui.servers) >= 1
    assert config.queue.tiers, "the example shows a VIP tier"
    text = EXAMPLE.read_text()
    # Every option of every model appears in the example (as a setting or a comment).
    from gouache import config as module

    for model in (
        module.DiscordConfig,
        module.StorageConfig,
        module.QueueConfig,
        module.TimeoutsConfig,
        module.TierConfig,
        module.MidjourneyConfig,
        module.MidjourneyAccount,
        module.ComfyUIServer,
        module.ComfyUIConfig,
        module.ImagesConfig,
        module.DescribeConfig,
        module.TranslateConfig,
        module.ModerationConfig,
        module.AdminConfig,
        module.LoggingConfig,
    ):
        for field in model.model_fields:
            documented = f"{field} =" in text or f".{field}]" in text
            assert documented, f"{model.__name__}.{field} is not in config.example.toml"


def test_secrets_come_from_the_environment_and_never_print() -> None:
    config = load_config(EXAMPLE, env=ENV)
    summary = config.summary()
    dumped = repr(config) + str(config) + config.model_dump_json()
    for secret in ENV.values():
        assert secret not in summary
        assert secret not in dumped
    assert "***" in summary
    assert set(config.secrets()) >= {ENV["DISCORD_BOT_TOKEN"], ENV["MJ_TOKEN_1"]}


def test_unset_environment_variable_is_named_with_its_field() -> None:
    lines = problems(MINIMAL, env={})
    assert lines == ["discord.token: environment variable DISCORD_BOT_TOKEN is not set"]


def test_field_paths_in_errors() -> None:
    text = (
        MINIMAL
        + """
[[midjourney.accounts]]
name = "a"
token = "x"
guild_id = 1
channel_id = 2

[[midjourney.accounts]]
name = "b"
token = "y"
guild_id = 1
channel_id = 2
concurrency = 0
mode = "ludicrous"

[queue]
timezone = "Mars/Olympus"
daily_limit = -1
bogus = 3
"""
    )
    lines = problems(text)
    assert "midjourney.accounts[1].concurrency: must be ≥ 1" in lines
    assert any(line.startswith("midjourney.accounts[1].mode: must be one of") for line in lines)
    assert any(
        line.startswith("queue.timezone: unknown time zone 'Mars/Olympus'") for line in lines
    )
    assert "queue.daily_limit: must be ≥ 0" in lines
    assert any(line.startswith("queue.bogus: unknown option") for line in lines)
    assert len(lines) == 5


def test_toml_syntax_error_names_the_line() -> None:
    lines = problems('[discord]\ntoken = "abc\napplication_id = 1\n')
    assert len(lines) == 1
    assert "TOML syntax error" in lines[0] and "line 2" in lines[0]


def test_cross_field_rules() -> None:
    text = (
        MINIMAL
        + """
[storage]
backend = "redis"

[[comfyui.servers]]
name = "gpu"
url = "http://127.0.0.1:8188"

[[midjourney.accounts]]
name = "gpu"
token = "t"
guild_id = 1
channel_id = 2

[admin]
listen = "0.0.0.0:8765"
"""
    )
    lines = problems(text)
    assert 'storage.redis_url: required when backend = "redis"' in lines
    assert any(
        line.startswith("admin.token: required when listening on a non-loopback") for line in lines
    )
    # Whole-file rules run once every section is valid on its own.
    fixed = text.replace('backend = "redis"', "").replace("0.0.0.0", "127.0.0.1")
    assert problems(fixed) == [
        "(top level): worker name 'gpu' is used twice (names must be unique)"
    ]


def test_tier_rules_and_default_tier() -> None:
    text = (
        MINIMAL
        + """
[queue]
default_tier = "member"
[[queue.tiers]]
name = "vip"
weight = 0
"""
    )
    lines = problems(text)
    assert "queue.tiers[0].weight: must be > 0" in lines
    ok = parse_config(
        MINIMAL + '[queue]\ndefault_tier = "m"\n[[queue.tiers]]\nname = "m"\n', env=ENV
    )
    assert ok.queue.tiers[0].weight == 1.0


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "gouache.toml"
    path.parent.mkdir()
    path.write_text(MINIMAL + '[storage]\nsqlite_path = "data/g.db"\n', encoding="utf-8")
    config = load_config(path, env=ENV)
    assert config.storage.sqlite_path == path.parent / "data" / "g.db"
    assert config.storage.images_dir == path.parent / "images"


def test_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.problems == [f"{tmp_path / 'nope.toml'}: file not found"]


def test_embedded_reference_and_literal_dollar() -> None:
    config = parse_config(
        MINIMAL + '[storage]\nbackend = "redis"\nredis_url = "redis://:${PW}@h:6379/0"\n',
        env={**ENV, "PW": "s3cret"},
    )
    assert config.storage.redis_url is not None
    assert config.storage.redis_url.get_secret_value() == "redis://:s3cret@h:6379/0"
    assert "s3cret" in config.secrets()[-1] or any("s3cret" in s for s in config.secrets())


def test_shards_come_in_pairs_and_need_redis() -> None:
    assert problems(MINIMAL + "shard_id = 0\n") == [
        "discord.shard_id: set shard_id and shard_count together"
    ]
    assert problems(MINIMAL + "shard_id = 2\nshard_count = 2\n") == [
        "discord.shard_id: must be < shard_count (2)"
    ]
    lines = problems(MINIMAL + "shard_id = 0\nshard_count = 2\n")
    assert lines == [
        'discord.shard_count: several shards share a queue only with storage.backend = "redis"'
    ]
    ok = parse_config(
        MINIMAL
        + 'shard_id = 1\nshard_count = 2\n[storage]\nbackend = "redis"\nredis_url = "${REDIS_URL}"\n',
        env=ENV,
    )
    assert ok.discord is not None and ok.discord.shard_id == 1
