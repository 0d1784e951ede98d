"""Check characters of Chinese identity numbers and codes, as a strict province checks them.

- Resident identity number, GB 11643—1999: 6-digit address code, 8-digit birth date, 3-digit
  sequence, 1 check character computed with ISO 7064 MOD 11-2 (`X` stands for 10).
- Unified social credit code (统一社会信用代码), GB 32100—2015: 18 characters from the 31-symbol
  set `0-9 A-H J-N P-R T U W-Y` (no I O Z S V); the last is a MOD 31 check character over the
  first 17 with weights 3^i mod 31.
- Administrative area codes, GB/T 2260: digits whose first two name a province-level unit.

Nothing here logs or returns the number itself: callers only learn valid / not valid.
"""
from __future__ import annotations

import datetime

# Province-level prefixes of GB/T 2260 (plus 71 Taiwan, 81 Hong Kong, 82 Macao).
PROVINCE_PREFIXES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 "
    "61 62 63 64 65 71 81 82".split())

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"  # index: weighted sum mod 11

CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character for 17 digits."""
    if len(first17) != 17 or not first17.isdigit() or not first17.isascii():
        raise ValueError("need exactly 17 ASCII digits")
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS))
    return _ID_CHECK[total % 11]


def resident_id_valid(value: str) -> bool:
    """18-character resident ID: real area prefix, real birth date, right check character.

    A lower-case `x` is accepted as the check character, as most systems do.
    """
    if not isinstance(value, str) or len(value) != 18 or not value.isascii():
        return False
    body, check = value[:17], value[17].upper()
    if not body.isdigit() or body[:2] not in PROVINCE_PREFIXES:
        return False
    try:
        birth = datetime.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        return False
    if birth.year < 1900 or birth > datetime.date.today():
        return False
    return resident_id_check_char(body) == check


def credit_code_check_char(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters of a credit code."""
    if len(first17) != 17 or any(c not in CREDIT_CHARSET for c in first17):
        raise ValueError("need 17 characters from the credit-code character set")
    total = sum(CREDIT_CHARSET.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS))
    return CREDIT_CHARSET[(31 - total % 31) % 31]


def credit_code_valid(value: str) -> bool:
    """18-character unified social credit code with the right check character (upper case only)."""
    if not isinstance(value, str) or len(value) != 18:
        return False
    if any(c not in CREDIT_CHARSET for c in value):
        return False
    if not value[2:8].isdigit():  # registration area code, GB/T 2260
        return False
    return credit_code_check_char(value[:17]) == value[17]


def area_code_valid(value: str, lengths: tuple[int, ...]) -> bool:
    """Digits only, one of `lengths` long, and a real province-level prefix."""
    return (isinstance(value, str) and value.isascii() and value.isdigit()
            and len(value) in lengths and value[:2] in PROVINCE_PREFIXES)


def mask_id(value: str) -> str:
    """Mask an ID number or credit code to its first and last 4 characters."""
    if not value:
        return value
    if len(value) <= 8:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def mask_name(value: str) -> str:
    """Mask a person's name to its first character."""
    if not value:
        return value
    return value[0] + "*" * max(1, len(value) - 1)
