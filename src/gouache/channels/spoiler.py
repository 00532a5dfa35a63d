"""Results of a channel whose content rule is ``spoiler`` are posted as Discord spoilers."""

from __future__ import annotations

from gouache.jobs import Job

#: Discord blurs an attachment whose file name starts with this.
SPOILER_PREFIX = "SPOILER_"


def spoiler_prefix(job: Job) -> str:
    """``SPOILER_`` for a job whose results must be posted as spoilers, else nothing."""
    return SPOILER_PREFIX if job.meta.get("spoiler") is True else ""
