"""Generated text against its label: exact, normalised, regex extraction, contains. Pure.

`TextRule.answer` turns a generated text into the answer that is scored and compared under load (for
consistency): the text itself (exact), its normalised form (normalised, contains), or what the pattern
extracts (regex). `TextRule.matches` says whether an answer is right for a label.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

MODES = ("exact", "normalised", "regex", "contains")


def normalise(text: str) -> str:
    """Lower case, punctuation dropped (every Unicode P* character), whitespace runs made one space, trimmed."""
    kept = "".join(" " if unicodedata.category(char).startswith("P") else char for char in text.casefold())
    return " ".join(kept.split())


@dataclass(frozen=True, slots=True)
class TextRule:
    """How generated text is scored: `mode` (one of MODES) and, for regex, the pattern whose first group
    (or whole match) is the answer."""

    mode: str = "exact"
    pattern: str | None = None
    _compiled: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown text match {self.mode!r}; known: {', '.join(MODES)}")
        if self.mode == "regex":
            if self.pattern is None:
                raise ValueError("match regex needs a pattern")
            object.__setattr__(self, "_compiled", re.compile(self.pattern))

    def answer(self, text: str) -> str:
        """The scored form of a generated text ('' when a regex finds nothing)."""
        if self.mode == "exact":
            return text
        if self.mode == "regex":
            assert self._compiled is not None
            found = self._compiled.search(text)
            if found is None:
                return ""
            return (found.group(1) if found.re.groups else found.group(0)) or ""
        return normalise(text)

    def matches(self, answer: str, label: Any) -> bool:
        """Whether `answer` (from `answer`) is right for `label`: equal (exact), equal once both are normalised
        (normalised, regex), or the normalised label found in it (contains)."""
        expected = str(label)
        if self.mode == "exact":
            return answer == expected
        if self.mode == "contains":
            wanted = normalise(expected)
            return bool(wanted) and wanted in answer
        return normalise(answer) == normalise(expected)
