"""A small CSV renderer for table endpoints (`?format=csv`, DRF's format override)."""

import csv
import io
from typing import Any

from rest_framework.renderers import BaseRenderer


class CsvRenderer(BaseRenderer):
    """Renders a list of flat dicts (or a paginated `{"results": [...]}`) as CSV."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        if isinstance(data, dict):
            data = data.get("results", [data])
        rows = [row for row in data if isinstance(row, dict)]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        response = (renderer_context or {}).get("response")
        view = (renderer_context or {}).get("view")
        if response is not None and response.status_code == 200:
            name = getattr(view, "csv_name", "export")
            response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return out.getvalue().encode(self.charset)
