"""The dataset-report artifact inlines plots and the first preview sheets, names the rest."""

from __future__ import annotations

import base64

from pipelines import steps
from services.common.dataset import Dataset
from services.common.store import ClipStore


def test_plots_and_first_sheets_are_inlined_the_rest_named(local_store: ClipStore, monkeypatch):
    monkeypatch.setattr(steps, "_INLINED_PREVIEWS", 2)
    target = Dataset(local_store, "d")
    plot = b"\x89PNG plot"
    local_store.put_bytes(target.view_key("plots/durations.png"), plot)
    sheets = [f"previews/tag{i}.jpg" for i in range(3)]
    for name in sheets:
        local_store.put_bytes(target.view_key(name), f"jpeg {name}".encode())
    images = ["![durations](plots/durations.png)", *(f"![sheet]({name})" for name in sheets)]
    local_store.put_text(target.view_key("report.md"), "\n".join(["# d", *images]) + "\n")
    text = steps.report_markdown(local_store, "d")
    assert f"data:image/png;base64,{base64.b64encode(plot).decode()}" in text
    for name in sheets[:2]:
        encoded = base64.b64encode(f"jpeg {name}".encode()).decode()
        assert f"data:image/jpeg;base64,{encoded}" in text
    assert f"(preview sheet `{target.view_uri(sheets[2])}`)" in text
    assert "](previews/" not in text and "](plots/" not in text
