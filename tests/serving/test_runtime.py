from __future__ import annotations

import gc

from serving.runtime import GC_YOUNG_THRESHOLD, tune_gc


def test_tune_gc_freezes_start_up_objects_and_still_collects_cycles() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        del a, b
        assert gc.collect() >= 2  # the cycle is found and freed
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
