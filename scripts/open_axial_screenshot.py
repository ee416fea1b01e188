"""What File > Open shows, and the PNG overlay of the same case (run under a display or Xvfb):

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/open_axial_screenshot.py

Opens a real LA 2018 case and its expert mask through the plugin's reader (as File > Open does)
at 1600x1000, on the slice where the atrium is largest, with napari's axes and scale bar, and
writes docs/screenshots/open_axial.png; then draws the same case with ``overlay.save_overlay``
(as ``la-dinov2 segment --png`` does) to docs/screenshots/overlay_axial.png. Check by eye: anterior
up, the patient's right on the screen's left, spine and descending aorta at the bottom.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASE = "CB5P5W7X310NIIVU7UZV"


def la2018() -> Path:
    for candidate in (os.environ.get("LA2018_DIR"), REPO.parent / "shared" / "data" / "la2018"):
        if candidate and (Path(candidate) / "images").is_dir():
            return Path(candidate)
    raise SystemExit("LA 2018 cases not found: set LA2018_DIR or place ../shared/data/la2018")


def napari_screenshot(image_path: Path, label_path: Path, out: Path) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="LA DINOv2: File > Open")
    viewer.window._qt_window.resize(1600, 1000)
    [image] = viewer.open(str(image_path), plugin="napari-la-dinov2")
    [mask] = viewer.open(str(label_path), plugin="napari-la-dinov2")
    area = (np.asarray(mask.data) != 0).sum(axis=(1, 2))
    viewer.dims.set_current_step(0, int(np.argmax(area)))
    axes, scale_bar = viewer.scene.overlays.axes, viewer.canvas.overlays.scale_bar  # napari 0.9
    axes.visible = axes.labels = True  # the anatomical axis labels, on the canvas
    scale_bar.visible = True
    viewer.layers.selection.active = image
    viewer.reset_view()
    app = QApplication.instance()
    for _ in range(50):
        app.processEvents()
        time.sleep(0.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    viewer.close()


def overlay_png(image_path: Path, label_path: Path, out: Path) -> None:
    from napari_la_dinov2.overlay import save_overlay
    from napari_la_dinov2.volume_files import read_labels, read_volume

    volume, meta = read_volume(image_path)
    labels = read_labels(label_path, meta)
    save_overlay(
        out,
        volume,
        labels,
        spacing=meta.spacing,
        slice_axis=meta.through_plane_axis(),
        title=f"{image_path.name}: expert mask",
        axcodes=meta.axcodes,
        overwrite=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default=CASE)
    args = parser.parse_args()
    root = la2018()
    image_path = root / "images" / f"{args.case}.nii.gz"
    label_path = root / "labels" / f"{args.case}.nii.gz"
    shots = REPO / "docs" / "screenshots"
    napari_screenshot(image_path, label_path, shots / "open_axial.png")
    overlay_png(image_path, label_path, shots / "overlay_axial.png")
    print(f"wrote {shots / 'open_axial.png'} and {shots / 'overlay_axial.png'}")


if __name__ == "__main__":
    main()
