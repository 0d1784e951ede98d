"""Console accounts: one core for `hcp agent user ...` and the console's own user page.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile); only
the hash is stored. Every function takes a writable `sqlite_utils.Database` (the CLI's, or the
agent writer's inside `writer.write`) and raises `AccountError` with a message to show.
"""
from __future__ import annotations

import re
import time

import sqlite_utils
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

SUPERVISOR, TECHNICIAN, WINDOW = "supervisor", "technician", "window"
ROLES = {SUPERVISOR: "管理员", TECHNICIAN: "技术员", WINDOW: "窗口人员"}
MIN_PASSWORD = 8       # the hall intranet is not the internet, but passwords get guessed
_USERNAME = re.compile(r"[A-Za-z0-9_.\-]{2,32}")

_hasher = PasswordHasher()
# verified against when the user does not exist, so a login takes as long either way
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AccountError(Exception):
    """An account operation that cannot be done; the message says why (Chinese + English)."""


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"密码至少 {MIN_PASSWORD} 个字符 password must have at least "
                           f"{MIN_PASSWORD} characters")


def add_user(db: sqlite_utils.Database, username: str, password: str, role: str,
             display_name: str = "", window: str | None = None, staff_id: str | None = None,
             windows: set[str] | None = None) -> int:
    """Create an account; window staff must name their window. Returns the user id."""
    if not _USERNAME.fullmatch(username or ""):
        raise AccountError("用户名应为 2–32 个字母、数字或 _ . - username must be 2-32 of "
                           "letters, digits, _ . -")
    if role not in ROLES:
        raise AccountError(f"未知角色 unknown role {role!r}: one of {', '.join(ROLES)}")
    if role == WINDOW:
        if not window:
            raise AccountError("窗口人员须指定窗口 window staff need --window")
        if windows is not None and window not in windows:
            raise AccountError(f"未配置的窗口 window {window!r} is not in hall.toml "
                               f"({', '.join(sorted(windows))})")
    elif window or staff_id:
        raise AccountError("只有窗口人员绑定窗口和工号 only window staff have a window/staff id")
    _check_password(password)
    if db.execute("SELECT 1 FROM console_users WHERE username = ?", (username,)).fetchone():
        raise AccountError(f"用户已存在 user {username!r} exists (use passwd to change the "
                           "password)")
    now = time.time()
    cur = db.execute(
        "INSERT INTO console_users(username, display_name, role, window, staff_id,"
        " password_hash, disabled, created_at, updated_at) VALUES (?,?,?,?,?,?,0,?,?)",
        (username, (display_name or username)[:40], role, window, staff_id or None,
         _hasher.hash(password), now, now))
    return int(cur.lastrowid)


def set_password(db: sqlite_utils.Database, username: str, password: str) -> None:
    """Change a password; the user's sessions end (they log in again)."""
    _check_password(password)
    uid = _user_id(db, username)
    db.execute("UPDATE console_users SET password_hash = ?, updated_at = ? WHERE id = ?",
               (_hasher.hash(password), time.time(), uid))
    db.execute("DELETE FROM console_sessions WHERE user_id = ?", (uid,))


def set_disabled(db: sqlite_utils.Database, username: str, disabled: bool = True) -> None:
    """Disable (or re-enable) an account; a disabled account's sessions end at once."""
    uid = _user_id(db, username)
    db.execute("UPDATE console_users SET disabled = ?, updated_at = ? WHERE id = ?",
               (int(disabled), time.time(), uid))
    if disabled:
        db.execute("DELETE FROM console_sessions WHERE user_id = ?", (uid,))


def _user_id(db: sqlite_utils.Database, username: str) -> int:
    row = db.execute("SELECT id FROM console_users WHERE username = ?", (username,)).fetchone()
    if row is None:
        raise AccountError(f"无此用户 no user {username!r}")
    return int(row[0])


def verify(db: sqlite_utils.Database, username: str, password: str) -> dict | None:
    """The enabled account if the password matches, else None (same work either way).
    Slow on purpose (argon2): call it off the event loop."""
    row = db.execute("SELECT id, username, display_name, role, window, staff_id, password_hash,"
                     " disabled FROM console_users WHERE username = ?", (username,)).fetchone()
    stored = row[6] if row else _DUMMY_HASH
    try:
        ok = _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None or row[7]:
        return None
    return {"id": row[0], "username": row[1], "displayName": row[2], "role": row[3],
            "window": row[4], "staffId": row[5]}


def list_users(db: sqlite_utils.Database) -> list[dict]:
    """Every account (never the hash)."""
    return [{"id": r[0], "username": r[1], "displayName": r[2], "role": r[3],
             "roleName": ROLES.get(r[3], r[3]), "window": r[4], "staffId": r[5],
             "disabled": bool(r[6])}
            for r in db.execute("SELECT id, username, display_name, role, window, staff_id,"
                                " disabled FROM console_users ORDER BY username").fetchall()]
