"""PII scrubbing: emails, credit-card numbers, IP addresses and phone numbers become tags.

Each kind is a regular expression for candidates plus, where one exists, a validity check that keeps
false positives down:
- `<EMAIL>`: local@domain.tld;
- `<CREDIT_CARD>`: 13–19 digits, optionally grouped by single spaces or dashes, with a card network's
  prefix and length (Visa 4…, Mastercard 51–55/2221–2720, Amex 34/37, Discover, JCB, UnionPay, Diners)
  and a valid Luhn checksum;
- `<IP_ADDRESS>`: IPv4 dotted quads with every octet ≤ 255 (not part of a longer dotted number such as
  a version string), and IPv6 addresses accepted by `ipaddress.IPv6Address` with at least two groups and a digit
  (so `a::b` in C++ stays);
- `<PHONE>`: international `+CC ...` numbers and North-American numbers with separators, e.g.
  `(555) 123-4567`, `555-123-4567`, `555.123.4567`, `+44 20 7946 0958`. Dates (2024-01-15), times and
  plain digit runs are left alone.
Kinds are applied in that order, so a card number is never half-tagged as a phone number.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable

EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z])"
)
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d]|\.\d)")
IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?![\w:])"
)
PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,4}"  # +CC groups
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d{3}([.-])\d{3}\1\d{4}"  # 555-123-4567, 555.123.4567
    r")(?![\w-])"
)

TAGS = {"email": "<EMAIL>", "credit_card": "<CREDIT_CARD>", "ip_address": "<IP_ADDRESS>", "phone": "<PHONE>"}


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of the digits of `number` (separators ignored)."""
    digits = [int(c) for c in number if c.isdigit()]
    if not digits:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Issuer prefixes (IIN ranges) and lengths of the major card networks: (first, last, lengths).
_CARD_RANGES = [
    (4, 4, (13, 16, 19)),  # Visa
    (51, 55, (16,)),  # Mastercard
    (2221, 2720, (16,)),  # Mastercard 2-series
    (34, 34, (15,)),  # American Express
    (37, 37, (15,)),
    (6011, 6011, (16, 17, 18, 19)),  # Discover
    (644, 649, (16, 17, 18, 19)),
    (65, 65, (16, 17, 18, 19)),
    (62, 62, (16, 17, 18, 19)),  # UnionPay
    (3528, 3589, (16, 17, 18, 19)),  # JCB
    (300, 305, (14, 15, 16, 17, 18, 19)),  # Diners Club
    (36, 36, (14, 15, 16, 17, 18, 19)),
    (38, 39, (16, 17, 18, 19)),
]


def card_issuer_ok(digits: str) -> bool:
    """Whether `digits` starts with a known card-network prefix and has one of its lengths (this keeps
    ISBN-13s, which start with 978/979, and other long numbers out)."""
    for first, last, lengths in _CARD_RANGES:
        width = len(str(first))
        if len(digits) in lengths and first <= int(digits[:width]) <= last:
            return True
    return False


def _card_ok(candidate: str) -> bool:
    separators = set(re.sub(r"\d", "", candidate))
    digits = re.sub(r"\D", "", candidate)
    return len(separators) <= 1 and card_issuer_ok(digits) and luhn_valid(digits)


def _ipv4_ok(candidate: str) -> bool:
    return all(
        int(part) <= 255 and (part == "0" or not part.startswith("0")) for part in candidate.split(".")
    )


def _ipv6_ok(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    groups = [g for g in re.split(r"::?", candidate) if g]
    return len(groups) >= 2 and any(c.isdigit() for c in candidate)


def _phone_ok(candidate: str) -> bool:
    return 7 <= sum(c.isdigit() for c in candidate) <= 15


CHECKS: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
    ("email", EMAIL, None),
    ("credit_card", CARD, _card_ok),
    ("ip_address", IPV4, _ipv4_ok),
    ("ip_address", IPV6, _ipv6_ok),
    ("phone", PHONE, _phone_ok),
]


def scrub_pii(text: str, kinds: tuple[str, ...] = tuple(TAGS)) -> tuple[str, Counter]:
    """`text` with every PII match of `kinds` replaced by its tag, and the count of replacements per kind.

    A replacement can expose a neighbour that a lookaround had hidden (`a@b.io4111 1111 1111 1111`
    becomes `a@b.io<CREDIT_CARD>`), so passes repeat until nothing changes: the result is a fixed
    point, and scrubbing it again changes nothing."""
    counts: Counter = Counter()
    for _ in range(8):
        before = sum(counts.values())
        for kind, pattern, ok in CHECKS:
            if kind not in kinds:
                continue

            def replace(match: re.Match[str], kind: str = kind, ok: Callable[[str], bool] | None = ok) -> str:
                if ok is not None and not ok(match.group(0)):
                    return match.group(0)
                counts[kind] += 1
                return TAGS[kind]

            text = pattern.sub(replace, text)
        if sum(counts.values()) == before:
            break
    return text, counts
