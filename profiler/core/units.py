"""Units shared by every floor. A name carries its unit (`_ns`, `_s`, `_bytes`); these convert between them."""

from __future__ import annotations

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
