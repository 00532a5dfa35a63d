"""`UserApi` against the Discord sandbox: calls follow the rate-limit headers."""

from __future__ import annotations

import aiohttp
from pydantic import SecretStr

from gouache.pool.midjourney_rest import UserApi
from gouache_sandbox.discord import DiscordSandbox
from gouache_sandbox.discord.midjourney import APPLICATION_ID

from ..sandbox.conftest import sandbox  # noqa: F401  (the fixture)


async def test_calls_wait_for_the_bucket_instead_of_drawing_429s(
    sandbox: DiscordSandbox,  # noqa: F811
) -> None:
    """Two requests a second on POST /interactions; seven calls in a row are never refused."""
    guild = sandbox.add_guild("g")
    channel = sandbox.add_channel(guild, "mj")
    account, token = sandbox.add_user_account("mj-account")
    sandbox.join(guild, account)
    sandbox.rest.ratelimits.set_route_limit("POST", "/interactions", 2, 1.0)
    api = UserApi(
        token=SecretStr(token),
        api_base=sandbox.api_base.replace("/v10", "/v9"),
        guild_id=str(guild.id),
        channel_id=str(channel.id),
        application_id=str(APPLICATION_ID),
    )
    async with aiohttp.ClientSession() as session:
        api.session = session
        # Bodies Discord refuses as malformed still count against the bucket.
        statuses = [(await api.call("POST", "/interactions", {})).status for _ in range(7)]
    assert statuses == [400] * 7
    assert sandbox.rest.statuses[429] == 0
