"""CSV download of analytics results (`?format=csv`, DRF's format override)."""

import csv
import io
from html import escape
from typing import Any

from rest_framework.renderers import BaseRenderer

TABLE_KEYS = ("rows", "steps", "findings")


def _table(data: Any) -> list[dict[str, Any]]:
    """The tabular part of a result: its first list of rows, else its scalar fields as one row."""
    if isinstance(data, list):
        return [row if isinstance(row, dict) else {"value": row} for row in data]
    if not isinstance(data, dict):
        return [{"value": data}]
    for key in TABLE_KEYS:
        rows = data.get(key)
        if isinstance(rows, list) and rows:
            return _table(rows)
    return [{k: v for k, v in data.items() if not isinstance(v, dict | list)}]


class CsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        rows = _table(data)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: v if not isinstance(v, list | dict) else str(v) for k, v in row.items()}
            )
        response = (renderer_context or {}).get("response")
        view = (renderer_context or {}).get("view")
        if response is not None and response.status_code == 200 and view is not None:
            name = getattr(view, "csv_name", "analytics")
            response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return out.getvalue().encode(self.charset)


class ReportHtmlRenderer(BaseRenderer):
    """`?format=html` of a stored report: its HTML as generated (autoescaped by its template).
    An error answer (a dict) is written as escaped text, never as markup."""

    media_type = "text/html"
    format = "html"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        if isinstance(data, str):
            return data.encode()
        return f"<!DOCTYPE html><pre>{escape(str(data))}</pre>".encode()
