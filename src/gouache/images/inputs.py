"""Taking in a member's images: fetch, check, store; and loading them again for a worker.

`InputImages.take` runs before anything is reserved or queued: every image of
a request is fetched (`ImageFetcher`), decoded and cleaned (`check_image`) and
stored in the image store under the SHA-256 of its clean bytes. A request with
one bad image is refused whole, with a line that names the image, and nothing
is charged. The job then carries `gouache.jobs.InputImage` records (key and
source URL); `InputImages.load` gives a worker the bytes: from this process's
store, or, when another machine took the request, fetched again from the URL,
checked again and stored here too. Stored inputs age out with the results
(``keep_days``): the store's sweep does not tell them apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from gouache.images.check import ImageLimits, ImageRejected, check_image, too_large
from gouache.images.fetch import FetchPolicy, ImageFetcher
from gouache.jobs import InputImage, InputRole
from gouache.storage.images import ImageStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Source:
    """One image to take in: a Discord attachment (its declared ``size``) or a typed link."""

    role: InputRole
    url: str
    label: str = "The image"
    size: int | None = None  # what Discord says the attachment weighs


@dataclass
class InputImages:
    """The intake of input images for one process (`aclose` it)."""

    store: ImageStore
    fetcher: ImageFetcher = field(default_factory=ImageFetcher)
    limits: ImageLimits = field(default_factory=ImageLimits)

    @classmethod
    def build(
        cls,
        store: ImageStore,
        *,
        api_base: str | None = None,
        limits: ImageLimits | None = None,
        timeout_s: float = 2.5,
    ) -> InputImages:
        """The intake for a deployment whose Discord is at ``api_base``."""
        policy = FetchPolicy.for_discord(api_base, timeout_s=timeout_s)
        return cls(store, ImageFetcher(policy), limits or ImageLimits())

    async def aclose(self) -> None:
        """Close the fetcher's session."""
        await self.fetcher.aclose()

    async def take(
        self, sources: Sequence[Source], *, max_bytes: int | None = None
    ) -> list[InputImage]:
        """Fetch, check and store every source, in order; `ImageRejected` names the first bad one.

        ``max_bytes`` is Discord's attachment limit for this interaction: the cap
        never goes above it.
        """
        limits = self.limits.capped(max_bytes)
        for source in sources:
            if source.size is not None and source.size > limits.max_bytes:
                raise too_large(source.size, limits, source.label)
        results = await asyncio.gather(
            *(self._take_one(s, limits) for s in sources), return_exceptions=True
        )
        taken: list[InputImage] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            taken.append(result)
        return taken

    async def _take_one(self, source: Source, limits: ImageLimits) -> InputImage:
        data = await self.fetcher.fetch(source.url, limits, source.label)
        checked = await asyncio.to_thread(check_image, data, limits, source.label)
        key = await self.store.put(checked.data)
        return InputImage(
            role=source.role,
            key=key,
            url=source.url,
            width=checked.width,
            height=checked.height,
        )

    async def load(self, image: InputImage) -> bytes:
        """The clean bytes of a stored input; fetched again from its URL if this store lacks it."""
        try:
            return await self.store.get(image.key)
        except FileNotFoundError:
            if not image.url:
                raise ImageRejected("An input image is no longer available.") from None
        log.info("images.refetch", key=image.key[:12], role=image.role.value)
        data = await self.fetcher.fetch(image.url, self.limits)
        checked = await asyncio.to_thread(check_image, data, self.limits)
        await self.store.put(checked.data)
        return checked.data
