"""Which Midjourney bot and speed one job asks for (channel settings and tiers choose them).

A job whose model is niji goes to the Niji bot (application id in
`midjourney_wire.NIJI_APPLICATION_ID`) through the same account and channel;
its U/V buttons go to the Niji bot too. A tier with ``midjourney_mode =
"relax"`` makes its members' jobs relaxed whatever the account's own mode;
``"fast"`` (or none) keeps the account's mode, so an account out of fast hours
still switches to relax as it would.
"""

from __future__ import annotations

from gouache.jobs import Job
from gouache.pool.midjourney_wire import NIJI_APPLICATION_ID


def bot_for(job: Job, default: str) -> str:
    """The application id of the bot that runs ``job``."""
    return NIJI_APPLICATION_ID if job.meta.get("mj_app") == "niji" else default


def mode_for(job: Job, mode: str) -> str:
    """The speed flag for ``job`` on an account whose mode is ``mode``."""
    return "relax" if job.meta.get("mj_mode") == "relax" else mode
