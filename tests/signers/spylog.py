"""Reading OpenSC's pkcs11-spy log: the PKCS#11 calls a process made, with their arguments.
Plain code (no pytest) so that the bench counts token operations the same way the tests do."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SPY = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"


@dataclass
class Call:
    name: str
    text: str


def parse_spy_log(log: Path) -> list[Call]:
    """The PKCS#11 calls pkcs11-spy logged, in order, each with its logged arguments."""
    calls = [Call(m.group(1), m.group(2))
             for m in re.finditer(r"^\d+: (C_\w+)\n(.*?)(?=^\d+: C_|\Z)", log.read_text(), re.M | re.S)]
    if not calls:
        raise AssertionError("pkcs11-spy wrote nothing")
    return calls


def counts(calls: list[Call]) -> Counter[str]:
    result = Counter(c.name for c in calls)
    result["C_Sign(real)"] = sum(1 for c in calls if c.name == "C_Sign" and not _null_output(c))
    return result


def _null_output(call: Call) -> bool:
    return bool(re.search(r"\[out\] pSignature\[\*pulSignatureLen\] NULL", call.text))
