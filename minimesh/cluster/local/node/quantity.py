"""Kubernetes resource quantities (`250m`, `1.5`, `64Mi`, `1e3`) as Decimals (pure).

Small on purpose: the official client's parser imports the whole client (two seconds of start-up).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_SUFFIX = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}
_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))((?:[eE][+-]?\d+)|[numkMGTPE]i?|)$")


def parse(value: object) -> Decimal:
    text = str(value).strip()
    m = _RE.match(text)
    if not m:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = m.group(1), m.group(2)
    try:
        if len(suffix) > 1 and suffix[0] in "eE" and suffix[1] != "i":
            return Decimal(number + suffix)
        if suffix not in _SUFFIX:
            raise ValueError(f"{value!r} is not a Kubernetes quantity")
        return Decimal(number) * _SUFFIX[suffix]
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from None


def ceil_div(value: Decimal, divisor: Decimal) -> int:
    return math.ceil(value / divisor)
