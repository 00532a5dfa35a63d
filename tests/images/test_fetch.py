"""ImageFetcher: https only, no private addresses (resolved first, each redirect too), caps.

A loopback aiohttp server stands for Discord's attachment host (the one host
exempt from the address rule, as the sandbox's is); everything a member could
type is refused before any connection is made, or at the redirect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gouache.images.check import ImageLimits, ImageRejected
from gouache.images.fetch import FetchPolicy, ImageFetcher, forbidden_address

from .pictures import png

PICTURE = png()


@pytest.fixture
async def cdn() -> AsyncIterator[TestServer]:
    """A stand-in of Discord's CDN with some misbehaving routes."""
    hang = asyncio.Event()

    async def picture(request: web.Request) -> web.Response:
        return web.Response(body=PICTURE, content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(200):
            await resp.write(b"\x00" * 65536)
        await resp.write_eof()
        return resp

    async def slow(request: web.Request) -> web.Response:
        await hang.wait()
        return web.Response(body=PICTURE)

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    app = web.Application()
    app.router.add_get("/pic.png", picture)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/endless", endless)
    app.router.add_get("/slow", slow)
    app.router.add_get("/loop", loop)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    hang.set()
    await server.close()


def _fetcher(server: TestServer, timeout_s: float = 5.0) -> ImageFetcher:
    base = f"http://127.0.0.1:{server.port}/api/v10"
    return ImageFetcher(FetchPolicy.for_discord(base, timeout_s=timeout_s))


async def test_discords_own_host_is_fetched(cdn: TestServer) -> None:
    fetcher = _fetcher(cdn)
    try:
        data = await fetcher.fetch(f"http://127.0.0.1:{cdn.port}/pic.png", ImageLimits())
    finally:
        await fetcher.aclose()
    assert data == PICTURE


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.com/cat.png", "https://"),
        ("ftp://example.com/cat.png", "https://"),
        ("https://127.0.0.1/cat.png", "does not fetch"),
        ("https://10.0.0.5/cat.png", "does not fetch"),
        ("https://192.168.1.1/cat.png", "does not fetch"),
        ("https://169.254.169.254/latest/meta-data/", "does not fetch"),
        ("https://[::1]/cat.png", "does not fetch"),
        ("https://[::ffff:127.0.0.1]/cat.png", "does not fetch"),
        ("https://[fd00:ec2::254]/latest/meta-data/", "does not fetch"),
        ("https://100.64.0.1/cat.png", "does not fetch"),
        ("https://user:pw@example.com/cat.png", "user name"),
    ],
)
async def test_unsafe_urls_are_refused_without_a_connection(url: str, why: str) -> None:
    async def lookup(host: str, port: int) -> list[str]:
        raise AssertionError(f"{host} must not even be resolved")

    fetcher = ImageFetcher(FetchPolicy(), lookup=lookup)
    try:
        with pytest.raises(ImageRejected, match=why):
            await fetcher.fetch(url, ImageLimits())
    finally:
        await fetcher.aclose()


async def test_a_name_that_resolves_to_a_private_address_is_refused() -> None:
    asked: list[str] = []

    async def lookup(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["93.184.216.34", "10.1.2.3"]  # one public, one private: refused

    fetcher = ImageFetcher(FetchPolicy(), lookup=lookup)
    try:
        with pytest.raises(ImageRejected, match="does not fetch"):
            await fetcher.fetch("https://sneaky.example/cat.png", ImageLimits())
    finally:
        await fetcher.aclose()
    assert asked == ["sneaky.example"]


async def test_localhost_by_name_is_refused() -> None:
    fetcher = ImageFetcher(FetchPolicy())
    try:
        with pytest.raises(ImageRejected, match="does not fetch"):
            await fetcher.fetch("https://localhost/cat.png", ImageLimits())
    finally:
        await fetcher.aclose()


@pytest.mark.parametrize(
    "target",
    [
        "https://127.0.0.1:1/secret.png",
        "https://169.254.169.254/latest/meta-data/",
        "http://example.com/cat.png",
        "https://localhost/cat.png",
    ],
)
async def test_a_redirect_to_a_forbidden_place_is_not_followed(
    cdn: TestServer, target: str
) -> None:
    fetcher = _fetcher(cdn)
    try:
        with pytest.raises(ImageRejected, match=r"https://|does not fetch"):
            await fetcher.fetch(f"http://127.0.0.1:{cdn.port}/redirect?to={target}", ImageLimits())
    finally:
        await fetcher.aclose()


async def test_redirect_loops_end(cdn: TestServer) -> None:
    fetcher = _fetcher(cdn)
    try:
        with pytest.raises(ImageRejected, match="redirects too many times"):
            await fetcher.fetch(f"http://127.0.0.1:{cdn.port}/loop", ImageLimits())
    finally:
        await fetcher.aclose()


async def test_the_byte_cap_holds_while_downloading(cdn: TestServer) -> None:
    fetcher = _fetcher(cdn)
    try:
        with pytest.raises(ImageRejected, match="too large"):
            await fetcher.fetch(
                f"http://127.0.0.1:{cdn.port}/endless", ImageLimits(max_bytes=1_000_000)
            )
        with pytest.raises(ImageRejected, match="too large"):  # Content-Length says so
            await fetcher.fetch(
                f"http://127.0.0.1:{cdn.port}/pic.png", ImageLimits(max_bytes=len(PICTURE) - 1)
            )
    finally:
        await fetcher.aclose()


async def test_a_slow_host_times_out(cdn: TestServer) -> None:
    fetcher = _fetcher(cdn, timeout_s=0.3)
    try:
        with pytest.raises(ImageRejected, match="took too long"):
            await fetcher.fetch(f"http://127.0.0.1:{cdn.port}/slow", ImageLimits())
    finally:
        await fetcher.aclose()


def test_forbidden_addresses() -> None:
    for address in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254"):
        assert forbidden_address(address)
    for address in ("::1", "fe80::1", "fd00::1", "::ffff:10.0.0.1", "224.0.0.1", "0.0.0.0"):
        assert forbidden_address(address)
    assert forbidden_address("not an address")
    assert not forbidden_address("93.184.216.34")
    assert not forbidden_address("2606:2800:220:1:248:1893:25c8:1946")
