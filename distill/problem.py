"""The problem type every source yields (distill/data.py reads files and datasets, distill/tasks/ builds
synthetic ones); a module of its own so that neither imports the other."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and record."""


@dataclass
class Problem:
    """One problem. `answer` is the gold answer, "" when the source has none (the filter then labels the
    problem by its samples' majority answer: docs/filter.md, "Problems without a gold answer")."""

    id: str
    problem: str
    answer: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
