"""Few-shot widget end to end on a folder of small cases with a tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from napari_la_dinov2._widgets._models import KNOWN_MODELS
from napari_la_dinov2._widgets._plots import FewShotPlot
from napari_la_dinov2._widgets.fewshot import FewShotWidget, parse_list
from napari_la_dinov2.training.events import RunDone

pytestmark = pytest.mark.gui
# A guard against a hung job, not a timing: the shared 2-core machine can be very slow.
WAIT_MS = 300_000


def test_parse_list():
    assert parse_list("1, 10, all", int, "patients") == [1, 10, "all"]
    assert parse_list("", float, "fractions") == []
    with pytest.raises(ValueError, match="comma-separated"):
        parse_list("one", int, "seeds")


def _dock_on_folder(viewer, case_folder, checkpoint, tmp_path, epochs: int) -> FewShotWidget:
    """The Few-shot dock on the case folder: one model, budgets of 1 and all, seed 0."""
    widget = FewShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Few-shot")
    widget.picker.folder.value = str(case_folder)
    KNOWN_MODELS.add(str(checkpoint))
    widget.models.value = [str(checkpoint)]
    widget.patients.value, widget.seeds.value = "1, all", "0"
    widget.epochs.value, widget.batch_size.value = epochs, 4
    widget.output.value = str(tmp_path / "fewshot")
    return widget


def test_fewshot_from_case_folder(
    make_napari_viewer, qtbot, case_folder, tiny_checkpoint, tmp_path
):
    widget = _dock_on_folder(make_napari_viewer(), case_folder, tiny_checkpoint, tmp_path, 1)
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=150_000)
    assert job.error is None, job.error
    out = tmp_path / "fewshot"
    assert (out / "results.csv").is_file() and (out / "fewshot.png").is_file()
    # 4 cases: 2 train, 1 validation, 1 test -> budgets of 1 and 2 patients, one test row each.
    assert [row["n_train"] for row in widget.rows] == [1, 2]
    assert widget.table.rowCount() == 2
    assert widget.table.item(0, 0).text() == "tiny-unet"
    assert [widget.table.item(r, 1).text() for r in range(2)] == ["1 patient", "all (2)"]
    # Every column in sight: the table is as wide as its columns, the plot gives way.
    assert widget.table.minimumWidth() >= widget.table.horizontalHeader().length()
    # The live plot got a dot per finished run, as each run ended.
    dots = widget.curve.points["tiny-unet"]
    assert sorted(dots) == [1, 2]
    assert dots[1] == [pytest.approx(widget.rows[0]["dice"])]
    assert "results in" in widget.status.value


def test_the_dock_says_the_cost_before_the_start_and_estimates_the_time(
    make_napari_viewer, qtbot, case_folder, tiny_checkpoint
):
    viewer = make_napari_viewer()
    widget = FewShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Few-shot")
    # Smaller defaults than the paper's 3 seeds x 10 epochs (hours on a laptop).
    assert widget.seeds.value == "0" and widget.epochs.value <= 5
    KNOWN_MODELS.add(str(tiny_checkpoint))
    widget.models.value = [str(tiny_checkpoint)]
    widget.seeds.value = "0, 1"
    assert "Up to 6 training runs" in widget.plan.value  # 1 model x 3 budgets x 2 seeds
    assert "hours on a laptop" in widget.plan.value
    widget.epochs.value = 3
    assert "of 3 epochs" in widget.plan.value

    widget.picker.folder.value = str(case_folder)
    widget.batch_size.value = 4
    job = widget.estimate()
    qtbot.waitUntil(lambda: job.finished, timeout=WAIT_MS)
    assert job.error is None, job.error
    # 4 cases: a pool of 2 training patients, so 1, 10 and all make 2 distinct sizes.
    found = widget.estimated
    assert found.runs == 4 and found.epochs == 3 and found.seconds > 0
    # Epochs x the runs' patients (1 + 2, for each of two seeds) x one patient's steps.
    assert found.steps > 0 and found.steps % (3 * (1 + 2) * 2) == 0
    assert widget.plan.value.startswith("4 runs x 3 epochs") and "about" in widget.plan.value
    assert widget.run_button.enabled


def test_a_single_run_is_drawn_inside_the_axes(qtbot):
    plot = FewShotPlot()
    qtbot.addWidget(plot)
    plot.add_event(RunDone(0, 1, "unet", "patients", 1, 1, 0, 0.0))
    (x0, x1), (y0, y1) = plot.axes.get_xlim(), plot.axes.get_ylim()
    assert x0 < 1 < x1 and y0 < 0.0 < y1  # not on the x-axis line, not on the frame
    assert np.isclose(y0, -0.05) and y1 > 1


def test_fewshot_cancel_says_so_names_no_missing_file_and_the_plot_moves_during_a_run(
    make_napari_viewer, qtbot, case_folder, tiny_checkpoint, tmp_path
):
    # Issue 22: the status said "0 results ...; files (results.csv, ...)" that did not exist.
    from napari_la_dinov2._widgets.fewshot import RESULT_FILES
    from napari_la_dinov2.training.events import EpochDone

    widget = _dock_on_folder(make_napari_viewer(), case_folder, tiny_checkpoint, tmp_path, 3)
    seen = {}
    handle = widget._on_event

    def on_event(event):  # Cancel pressed once the first run has validated an epoch
        handle(event)
        if isinstance(event, EpochDone) and not seen:
            seen["validation"] = widget.curve.running_dice
            widget.cancel_button.clicked.emit()

    widget._on_event = on_event
    job = widget.run()
    qtbot.waitUntil(lambda: job.finished, timeout=WAIT_MS)
    # During the run the plot showed the running run's validation Dice, before any test dot.
    assert seen["validation"] is not None and 0.0 <= seen["validation"] <= 1.0
    status = widget.status.value
    assert status.startswith("cancelled after 0 of 2 runs"), status
    for name in RESULT_FILES:  # named only if written
        assert (name in status) == (tmp_path / "fewshot" / name).is_file(), (name, status)
    assert "no result files written" in status
