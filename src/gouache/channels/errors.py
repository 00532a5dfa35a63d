"""What a member is told when a channel's settings refuse a request or a change."""

from __future__ import annotations

from collections.abc import Iterable

from gouache.errors import ErrorCode, GouacheError, PromptRejected


class SettingsInvalid(GouacheError):
    """A settings change was refused; ``problems`` has one line per problem, naming the setting.

    Nothing of the change is saved.
    """

    code = ErrorCode.SETTINGS_INVALID

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) or "invalid settings")


class UnknownModel(PromptRejected):
    """The model asked for is not one the pool can run; the message lists the valid ones."""

    code = ErrorCode.UNKNOWN_MODEL


class NotAllowed(GouacheError):
    """The member may not do that here (settings without Manage Server, a model their tier lacks)."""

    code = ErrorCode.NOT_ALLOWED


class ChannelClosed(GouacheError):
    """The channel takes no image requests."""

    code = ErrorCode.CHANNEL_CLOSED


class ChannelCapReached(GouacheError):
    """The channel's daily cap is used up for today."""

    code = ErrorCode.CHANNEL_CAP

    def __init__(self, *, limit: int) -> None:
        super().__init__(
            f"This channel has made its {limit} images for today; try again tomorrow "
            "or in another channel."
        )
        self.limit = limit


class ContentRefused(PromptRejected):
    """The prompt is flagged as adult and the channel's content rule refuses it."""

    code = ErrorCode.CONTENT_REFUSED
