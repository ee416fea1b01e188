"""Few-shot widget end to end on a folder of small cases with a tiny checkpoint."""

from __future__ import annotations

import pytest

from napari_la_dinov2._widgets._models import KNOWN_MODELS
from napari_la_dinov2._widgets.fewshot import FewShotWidget, parse_list

pytestmark = pytest.mark.gui


def test_parse_list():
    assert parse_list("1, 10, all", int, "patients") == [1, 10, "all"]
    assert parse_list("", float, "fractions") == []
    with pytest.raises(ValueError, match="comma-separated"):
        parse_list("one", int, "seeds")


def test_fewshot_from_case_folder(
    make_napari_viewer, qtbot, case_folder, tiny_checkpoint, tmp_path
):
    viewer = make_napari_viewer()
    widget = FewShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Few-shot")
    widget.picker.folder.value = str(case_folder)
    KNOWN_MODELS.add(str(tiny_checkpoint))
    widget.models.value = [str(tiny_checkpoint)]
    widget.patients.value, widget.seeds.value = "1, all", "0"
    widget.epochs.value, widget.batch_size.value = 1, 4
    widget.output.value = str(tmp_path / "fewshot")
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=150_000)
    assert job.error is None, job.error
    out = tmp_path / "fewshot"
    assert (out / "results.csv").is_file() and (out / "fewshot.png").is_file()
    # 4 cases: 2 train, 1 validation, 1 test -> budgets of 1 and 2 patients, one test row each.
    assert [row["n_train"] for row in widget.rows] == [1, 2]
    assert widget.table.rowCount() == 2
    assert widget.table.item(0, 0).text() == "tiny-unet"
    assert not widget.curve.pixmap().isNull()
