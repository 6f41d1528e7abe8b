"""The garbage collector's part in timing: what a collection walks, and when a full one may run.

A full collection walks every object the collector tracks, holding the GIL throughout. Once its
libraries are imported (aiohttp, numpy, scipy, scikit-learn, grpc) the sidecar tracks ~170,000 objects,
and one full collection of them took 110-240 ms on the loaded 2-core development machine: a pause of
the event loop that `/healthz`, `/report` and the latency of every request in flight would all show.

- `freeze_baseline()`, once, when the process has started: everything alive then (modules, classes,
  the config) goes to the permanent generation. It is never garbage, and no collection walks it again.
- `young_collections_only()`, around a stage: the young generations are still collected (short-lived
  cycles die young), but no full collection starts until the stage is over. The first one after it walks
  only what the runs made since the baseline.

Nothing here freezes a run's objects. Frozen objects are never collected, and an HDR histogram is cyclic
(the histogram and its encoder refer to each other), so the histograms of a stage frozen at its start
stayed for the life of the sidecar: ~0.5 MiB a stage, every run (`bench/soak.py` shows the series).
The one freeze of a run, its hold-out set once loaded (`profiler.app.run.prepare_inputs`), comes after a
collection of what earlier runs left, for the same reason.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

NO_FULL_COLLECTION = 2**30
"""A threshold for the oldest generation that is never reached: young collections do not go on to a full one."""

_frozen = False
_holds = 0
_saved: tuple[int, int, int] = gc.get_threshold()


def freeze_baseline() -> bool:
    """Collect once and freeze everything alive, the first time it is called in a process; True when it froze.
    Blocking (a full collection): call it before serving, never on a loop that answers requests."""
    global _frozen
    if _frozen:
        return False
    gc.collect()
    gc.freeze()
    _frozen = True
    return True


@contextlib.contextmanager
def young_collections_only() -> Iterator[None]:
    """No full collection inside the block; young ones go on as usual. Blocks may overlap (engines sharing a
    loop): the thresholds are restored when the last one ends."""
    global _holds, _saved
    if _holds == 0:
        _saved = gc.get_threshold()
        gc.set_threshold(_saved[0], _saved[1], NO_FULL_COLLECTION)
    _holds += 1
    try:
        yield
    finally:
        _holds -= 1
        if _holds == 0:
            gc.set_threshold(*_saved)
