"""Screenshots of a correction by clicks in progress, for the README (under Xvfb):

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot_correct.py

A test patient of the embedded default model (never seen by it nor by the click model), its
automatic mask made by the Segment dock, then the Correct dock: the clicks the benchmark's
simulated user would make (the deepest point of the largest error region), each applied by the
dock's own worker. Shots after the segmentation and after three clicks, on the slice of the
last click; the expert mask is drawn as a contour for reference. PNGs go to docs/screenshots/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from screenshots import add_case, colour_labels, dock, load_cases, snap, wait  # noqa: E402


def go_to_slice(viewer, image_layer, meta, position) -> None:
    from napari_la_dinov2._layer_geometry import show_file_slice

    axis = meta.through_plane_axis()
    show_file_slice(viewer, image_layer, axis, position[axis])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args(argv)
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_la_dinov2._layer_geometry import file_to_layer_index, mask_of
    from napari_la_dinov2._widgets.correct import CorrectWidget
    from napari_la_dinov2._widgets.segment import SegmentWidget
    from napari_la_dinov2.interactive import next_click

    case = load_cases(1, "default")[0]
    name, _, truth, meta = case
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    app = QApplication.instance()
    image, expert = add_case(viewer, case)
    colour_labels(expert, "#ffffff", contour=1)
    expert.opacity, expert.name = 0.9, f"{name} expert (contour)"
    segment, correct = SegmentWidget(viewer), CorrectWidget(viewer)
    dock(viewer, app, segment, "Segment", width=480)
    dock(viewer, app, correct, "Correct", width=480)
    segment.image.value = image
    segment.select_model("default")
    wait(segment.run(), app)
    mask = segment.last_layer
    colour_labels(mask, "#00e5ff")
    mask.opacity = 0.45
    correct.image.value, correct.mask.value = image, mask
    wait(correct.start(), app)
    first = next_click(np.array(mask_of(mask, image)), truth, meta.spacing)
    go_to_slice(viewer, image, meta, first.position)
    snap(viewer, app, "correct_before", args.out)
    for _ in range(args.clicks):
        click = next_click(np.array(mask_of(mask, image)), truth, meta.spacing)
        correct.negative.value = not click.positive
        data = file_to_layer_index(image, np.asarray(click.position, float)[None])[0]
        correct.points.add(np.asarray(correct.points.world_to_data(image.data_to_world(data))))
        while correct.pending or correct.job is None or not correct.job.finished:
            wait(correct.job, app)
        go_to_slice(viewer, image, meta, click.position)
    viewer.layers.selection.active = correct.points
    snap(viewer, app, "correct_clicks", args.out)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
