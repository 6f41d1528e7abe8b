"""profiler: a sidecar that profiles a served model and says whether to ship it."""

from __future__ import annotations

__version__ = "0.1.0"
