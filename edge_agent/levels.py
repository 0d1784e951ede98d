"""The five rating levels as our records carry them (wire code 1 非常满意 … 5 非常不满意).

The one agent-side definition: binding, queries, alerts and every upstream profile use it. A
profile that numbers the other way round (1 = 非常不满意) converts with `provincial()`.
"""
from __future__ import annotations

LEVEL_NAMES = {1: "非常满意", 2: "满意", 3: "基本满意", 4: "不满意", 5: "非常不满意"}


def is_bad(level: int) -> bool:
    """差评: the two lowest levels, which need a reason tag or a written reason upstream."""
    return level in (4, 5)


def provincial(level: int) -> int:
    """The 1 = 非常不满意 … 5 = 非常满意 number every provincial interface found uses."""
    return 6 - level
