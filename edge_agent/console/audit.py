"""The console's audit log (规范信息查询权限): who viewed which 差评, exported what, changed what.

`record` runs inside a writer transaction, next to the change it describes, so a change and its
audit row commit together. Details never carry rater data.
"""
from __future__ import annotations

import time

import sqlite_utils

from ..privacy import scrub

ACTIONS = {
    "login": "登录", "login_failed": "登录失败", "logout": "退出", "view_bad_rating": "查看差评",
    "export": "导出", "followup": "回访整改", "appeal_filed": "提出申诉",
    "appeal_decided": "记录复核结果", "paper_entered": "录入纸质评价",
    "paper_confirmed": "确认纸质评价", "paper_rejected": "退回纸质评价",
    "paper_scan_viewed": "查看纸质评价扫描件", "upload_retry": "重试上传", "user_added": "新增账号",
    "user_disabled": "停用账号", "password_changed": "修改密码"}


def record(db: sqlite_utils.Database, username: str, action: str, target: str | None = None,
           detail: str | None = None, ip: str | None = None, at: float | None = None) -> None:
    """Append one audit row (inside the caller's transaction). What a person typed (a user
    name at a failed login) is scrubbed: an ID or phone number typed by mistake is masked."""
    db.execute("INSERT INTO console_audit(at, username, action, target, detail, ip)"
               " VALUES (?, ?, ?, ?, ?, ?)",
               (at if at is not None else time.time(), scrub(username)[:64], action,
                scrub(target) if target else target, scrub(detail or "")[:500] or None, ip))
