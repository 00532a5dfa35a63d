"""What the sandbox's parts use of the `DiscordSandbox` that owns them.

Simulated members, the control routes and the viewer are built by
`DiscordSandbox` and act through it; they depend on this protocol, not on the
class, so the package has no import cycle.
"""

from __future__ import annotations

from typing import Protocol

from gouache_sandbox.discord.gateway import GatewayServer
from gouache_sandbox.discord.gateway_faults import GatewayFaults
from gouache_sandbox.discord.permissions import Overwrite
from gouache_sandbox.discord.server import RestServer
from gouache_sandbox.discord.state import Channel, Guild, Message, Role, SandboxClock, SandboxState


class SandboxHost(Protocol):
    """A running Discord sandbox: its state, servers and the operator's switches."""

    clock: SandboxClock
    state: SandboxState
    rest: RestServer
    gateway: GatewayServer
    gateway_faults: GatewayFaults

    @property
    def base_url(self) -> str: ...

    def messages(self, channel_id: int) -> list[Message]: ...

    def clear_faults(self) -> None: ...

    def set_role_permissions(self, guild: Guild, role_id: int, permissions: int) -> Role: ...

    def set_overwrite(
        self, channel: Channel, target_id: int, *, allow: int = 0, deny: int = 0
    ) -> Overwrite: ...

    def clear_overwrite(self, channel: Channel, target_id: int) -> bool: ...

    def set_member_roles(self, guild: Guild, user_id: int, roles: list[int]) -> None: ...

    def permissions_of(self, user_id: int, channel: Channel) -> int: ...
