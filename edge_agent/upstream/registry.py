"""The one list of upstream profiles. `get_profile(name)` names the known ones when asked for an
unknown one; config validation, the worker, check-config and the demo all read it here."""
from __future__ import annotations

from .profiles.base import Profile
from .profiles.gbt39046_json import PROFILE as _GBT
from .profiles.national_sm2 import PROFILE as _NATIONAL
from .profiles.sd_epoint_json import PROFILE as _SD
from .profiles.zj_offlinereport_form import PROFILE as _ZJ

PROFILES: dict[str, Profile] = {p.name: p for p in (_GBT, _ZJ, _SD, _NATIONAL)}
PROFILE_NAMES = tuple(PROFILES)


def get_profile(name: str) -> Profile:
    """The profile called `name`; ValueError naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"未知档案 unknown profile {name!r}; known: "
                         f"{', '.join(PROFILES)}") from None
