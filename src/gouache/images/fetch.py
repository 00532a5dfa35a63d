"""Downloading an image a member pointed at, without letting the URL reach inside.

A URL a member types is fetched only over **https**, and only from a host
whose every address is public: the name is resolved first and refused if any
address is loopback, private, link-local (the cloud metadata service lives
there), shared, reserved or multicast. The connection then uses exactly the
addresses that were checked (a resolver of our own), so a name that changes
its answer between the check and the connect cannot slip through. Redirects
are not followed blindly: each hop is checked again like a new URL, at most
`FetchPolicy.max_redirects` of them. The download has a total timeout and a
byte cap, counted while reading (a ``Content-Length`` over the cap is refused
before reading at all).

Discord's own attachment hosts (``cdn.discordapp.com``, ``media.discordapp.net``
and the host gouache's ``[discord] api_base`` names) are exempt from the
address rule and may use that base's scheme: in the sandbox they are on
loopback, and attachments reach gouache through them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gouache.images.check import ImageLimits, ImageRejected, too_large

log = structlog.get_logger(__name__)

DISCORD_CDN_HOSTS: Final = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
_CHUNK: Final = 2**16
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_UNSAFE = "That image link points somewhere gouache does not fetch from."

Lookup = Callable[[str, int], Awaitable[list[str]]]


def forbidden_address(address: str) -> bool:
    """True for an address a member's URL may not reach (anything not on the public internet)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def system_lookup(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Where images may come from and how long fetching one may take."""

    timeout_s: float = 2.5
    max_redirects: int = 3
    #: ``host`` or ``host:port`` of Discord's attachment hosts (exempt from the address rule).
    trusted_hosts: frozenset[str] = DISCORD_CDN_HOSTS
    #: Schemes allowed for the trusted hosts (``http`` only when api_base is http, the sandbox).
    trusted_schemes: frozenset[str] = frozenset({"https"})

    @classmethod
    def for_discord(cls, api_base: str | None, **kw: Any) -> FetchPolicy:
        """The policy for a deployment whose Discord is at ``api_base`` (None: discord.com)."""
        hosts, schemes = set(DISCORD_CDN_HOSTS), {"https"}
        if api_base:
            base = URL(api_base)
            if base.host:
                hosts.add(f"{base.host}:{base.port}" if base.explicit_port else base.host)
                schemes.add(base.scheme)
        return cls(trusted_hosts=frozenset(hosts), trusted_schemes=frozenset(schemes), **kw)

    def trusted(self, url: URL) -> bool:
        """Whether ``url`` is on one of Discord's attachment hosts."""
        if url.scheme not in self.trusted_schemes or not url.host:
            return False
        host = url.host.lower()
        return host in self.trusted_hosts or f"{host}:{url.port}" in self.trusted_hosts


class _CheckedResolver(AbstractResolver):
    """Resolves a host and refuses it if any of its addresses is not public."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self._lookup(host, port)
        except OSError as exc:
            raise ImageRejected("That image link's host does not exist.") from exc
        if not addresses or any(forbidden_address(a) for a in addresses):
            raise ImageRejected(_UNSAFE)
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        return None


@dataclass
class ImageFetcher:
    """Fetches image bytes by URL under a `FetchPolicy` (one session; `aclose` it)."""

    policy: FetchPolicy = field(default_factory=FetchPolicy)
    lookup: Lookup = system_lookup
    _session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=_CheckedResolver(self.lookup), ssl=True)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def aclose(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def check_url(self, url: URL) -> None:
        """Refuse a URL that is not https (or a trusted host's scheme) or names a bad address."""
        if self.policy.trusted(url):
            return
        if url.scheme != "https" or not url.host:
            raise ImageRejected("Image links must start with https://.")
        if url.user or url.password:
            raise ImageRejected("Image links may not carry a user name or password.")
        host = url.host
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return  # a name: the resolver checks its addresses when connecting
        if forbidden_address(host.strip("[]")):
            raise ImageRejected(_UNSAFE)

    async def fetch(self, url: str, limits: ImageLimits, label: str = "The image") -> bytes:
        """The bytes at ``url`` (after checked redirects), at most ``limits.max_bytes``."""
        try:
            target = URL(url)
        except ValueError:
            raise ImageRejected("That image link is not a valid URL.") from None
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._follow(target, limits, label)
        except TimeoutError:
            raise ImageRejected(f"{label} took too long to download.") from None

    async def _follow(self, url: URL, limits: ImageLimits, label: str) -> bytes:
        for _hop in range(self.policy.max_redirects + 1):
            self.check_url(url)
            try:
                async with self._http().get(url, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        url = url.join(URL(resp.headers["Location"]))
                        continue
                    if resp.status != 200:
                        raise ImageRejected(
                            f"{label} could not be downloaded (HTTP {resp.status})."
                        )
                    return await _read(resp, limits, label)
            except aiohttp.ClientError as exc:
                if isinstance(exc.__cause__, ImageRejected):
                    raise exc.__cause__ from None
                log.info("images.fetch_failed", host=url.host, error=type(exc).__name__)
                raise ImageRejected(f"{label} could not be downloaded.") from exc
        raise ImageRejected(f"{label}'s link redirects too many times.")


async def _read(resp: aiohttp.ClientResponse, limits: ImageLimits, label: str) -> bytes:
    if (resp.content_length or 0) > limits.max_bytes:
        raise too_large(resp.content_length or 0, limits, label)
    data = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        data += chunk
        if len(data) > limits.max_bytes:
            raise too_large(len(data), limits, label)
    return bytes(data)


def hosts_of(urls: Iterable[str]) -> list[str]:
    """The hosts of ``urls`` (for log lines: never the whole signed URL)."""
    return [URL(u).host or "?" for u in urls]
