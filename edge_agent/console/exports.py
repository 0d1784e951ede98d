"""Statistics exports: XLSX (openpyxl) and CSV with a UTF-8 BOM, so both open in Excel on
Chinese Windows. Rows come from `queries.export_rows` (reasons as names, rater masked or left
out); nothing here looks at the database.
"""
from __future__ import annotations

import csv
import io

from openpyxl import Workbook

# an export is for 通报 and assessment, not a backup: a year of a busy window fits easily
MAX_ROWS = 200_000

_SUMMARY_COLS = (("评价数", "total"), ("满意（含基本满意）", "good"), ("差评", "bad"),
                 ("满意率%", "satisfaction"), ("差评率%", "badRate"))


def csv_bytes(rows: list[dict]) -> bytes:
    """The rating rows as CSV, UTF-8 with BOM (Excel reads the BOM as 'this is UTF-8')."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\r\n")
        w.writeheader()
        w.writerows(rows)
    else:
        buf.write("无数据\r\n")
    return "\ufeff".encode("utf-8") + buf.getvalue().encode("utf-8")


def _levels(r: dict) -> list:
    return [x["n"] for x in r["byLevel"]]


def xlsx_bytes(stats: dict, rows: list[dict]) -> bytes:
    """A workbook: summary, rankings by window/staff/matter, periods, 差评 reasons, details."""
    wb = Workbook(write_only=True)
    level_heads = [x["name"] for x in stats["total"]["byLevel"]]
    head = [h for h, _ in _SUMMARY_COLS] + level_heads
    ws = wb.create_sheet("汇总")
    ws.append(["统计期间", f"{stats['from']} 至 {stats['to']}"])
    ws.append(["窗口", stats["window"] or "全部窗口"])
    ws.append(head)
    ws.append([stats["total"][k] for _, k in _SUMMARY_COLS] + _levels(stats["total"]))
    for title, key, cols in (("按窗口", "byWindow", (("排名", "rank"), ("窗口", "window"),
                                                    ("窗口名称", "name"))),
                             ("按人员", "byStaff", (("排名", "rank"), ("工号", "staffId"),
                                                   ("姓名", "name"))),
                             ("按事项", "byTask", (("排名", "rank"), ("事项编码", "taskCode"),
                                                  ("事项名称", "name"))),
                             ("按时段", "byPeriod", (("时段", "period"),))):
        ws = wb.create_sheet(title)
        ws.append([h for h, _ in cols] + head)
        for r in stats[key]:
            ws.append([r[k] for _, k in cols] + [r[k] for _, k in _SUMMARY_COLS] + _levels(r))
    ws = wb.create_sheet("差评原因")
    ws.append(["差评原因", "次数"])
    for r in stats["badByReason"]:
        ws.append([r["name"], r["n"]])
    ws = wb.create_sheet("差评聚集")
    ws.append(["事项编码", "事项名称", "差评原因", "次数"])
    for r in stats["badClusters"]:
        ws.append([r["taskCode"], r["taskName"], r["reasonName"], r["n"]])
    ws = wb.create_sheet("评价明细")
    if rows:
        ws.append(list(rows[0]))
        for r in rows:
            ws.append(list(r.values()))
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
