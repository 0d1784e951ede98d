"""Check characters of PRC identity numbers, so intake refuses a case the province would refuse.

- Resident ID (GB 11643—1999): 17 digits + ISO 7064 MOD 11-2 check character (`X` = 10).
- Unified social credit code (GB 32100—2015): 18 characters from `0-9 A-H J-N P-R T U W-Y`,
  the last a MOD 31 check character.

Functions answer valid/not valid only; they never echo the number.
"""
from __future__ import annotations

import datetime

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character for 17 ASCII digits."""
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS))
    return _ID_CHECK[total % 11]


def resident_id_valid(value: str) -> bool:
    """18 characters, a real birth date, the right check character."""
    if len(value) != 18 or not value.isascii() or not value[:17].isdigit():
        return False
    try:
        birth = datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if birth.year < 1900 or birth > datetime.date.today():
        return False
    return resident_id_check_char(value[:17]) == value[17].upper()


def credit_code_check_char(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters."""
    total = sum(CREDIT_CHARSET.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS))
    return CREDIT_CHARSET[(31 - total % 31) % 31]


def credit_code_valid(value: str) -> bool:
    """18 characters from the credit-code set with the right check character."""
    if len(value) != 18 or any(c not in CREDIT_CHARSET for c in value):
        return False
    if not value[2:8].isdigit():
        return False
    return credit_code_check_char(value[:17]) == value[17]
