"""Process settings applied by `gouache run` once started."""

from __future__ import annotations

import gc

from gouache.runtime import tune_gc


class _Built:
    """Something the app builds at startup."""


def test_tune_gc_freezes_what_is_alive_and_raises_only_the_first_threshold() -> None:
    before = gc.get_threshold()
    startup_object = _Built()
    assert gc.is_tracked(startup_object)
    try:
        tune_gc(12_345)
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > 0
        # Frozen objects are out of the collector's view (no generation lists them).
        assert not any(o is startup_object for o in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert any(o is startup_object for o in gc.get_objects())
