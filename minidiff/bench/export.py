"""CSV tables of the Rf/Rb results, for spreadsheets and plotting scripts.

An Rf/Rb result (``minidiff.rfrb/2``: :func:`minidiff.bench.measure_loss`, ``bench rfrb``) becomes a
long table, one quantity per row — ``name, quantity, value, low, high, unit, note`` — where a timing's value
is its median and low/high its quartiles, and a ratio's low/high its quartile-based spread; a list of
such results is one table with a row block per result.  A depth sweep (``minidiff.depth/2``) becomes one
row per depth with its own columns.

>>> from minidiff.bench.export import to_csv
>>> print(to_csv({"schema": "minidiff.depth/2", "rows": [{"layers": 1, "Rf": 2.5}]}).strip())
layers,Rf
1,2.5
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from .rfrb import DEPTH_SCHEMA, RATIOS, SCHEMA, TIMED

COLUMNS = ("name", "quantity", "value", "low", "high", "unit", "note")


def result_rows(result: dict) -> list[dict]:
    """The rows of the CSV table of ``result`` (an Rf/Rb result, a list of them, or a depth sweep)."""
    if isinstance(result, (list, tuple)):
        return [row for r in result for row in result_rows(r)]
    schema = result.get("schema")
    if schema == DEPTH_SCHEMA:
        return [dict(row) for row in result["rows"]]
    if schema != SCHEMA:
        raise ValueError(f"to_csv: expected a result of schema {SCHEMA} or {DEPTH_SCHEMA}, got {schema!r}")
    return _rfrb_rows(result)


def _rfrb_rows(r: dict) -> list[dict]:
    rows = []

    def add(quantity: str, value: Any, unit: str, low: Any = "", high: Any = "", note: str = "") -> None:
        rows.append(dict(zip(COLUMNS, (r["name"], quantity, value, low, high, unit, note))))

    for key in TIMED:
        add(key, r[key]["median"], r["units"], r[key]["q1"], r[key]["q3"])
    for key in (*RATIOS, "Rf_floor"):
        if key in r:  # (results written before Rf_floor was added lack it)
            add(key, r[key]["value"], "ratio", r[key]["low"], r[key]["high"])
    model = r.get("flop_model", {})
    if model is None:
        add("flop_model", "not available", "", note=r.get("flop_model_note", ""))
    elif model:
        for key in ("forward_flops", "jvp_flops", "backprop_flops"):
            add(key, model[key], "flops")
        add("flop_Rf", model["Rf"], "ratio")
        add("flop_Rb", model["Rb"], "ratio")
    for mode, nbytes in r.get("peak_memory_bytes", {}).items():
        add(f"peak_memory_{mode}", nbytes, "bytes")
    for phase, p in r.get("profile", {}).get("phases", {}).items():
        for group, g in p["groups"].items():
            add(f"profile.{phase}.{group}", g["seconds"], "seconds")
        add(f"profile.{phase}.outside_primitives", p["outside_primitives"], "seconds")
        add(f"profile.{phase}.total", p["seconds"], "seconds")
    return rows


def to_csv(result: dict) -> str:
    """The CSV text of ``result`` (see the module doc)."""
    rows = result_rows(result)
    columns = list(COLUMNS) if rows and list(rows[0]) == list(COLUMNS) else _columns(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _columns(rows: list[dict]) -> list:
    seen: dict = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def write_csv(result: dict, path: str | os.PathLike[str]) -> None:
    """Write the CSV table of ``result`` to ``path`` and say so (nothing when ``path`` is empty)."""
    if path:
        with open(path, "w", newline="") as fh:
            fh.write(to_csv(result))
        print(f"wrote {path}")
