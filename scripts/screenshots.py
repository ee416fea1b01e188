"""Screenshots of each widget at work, for the README (run under a display or Xvfb):

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py

Everything runs for real: a small UNet is fine-tuned on real cases (../shared/data/la2018 or
$LA2018_DIR; the synthetic phantom where absent) in the Fine-tune widget, then that checkpoint
(or --model, e.g. the embedded 'default') segments another case in the Segment widget, Compare
sets it against an earlier checkpoint and the expert mask, and Few-shot draws a small learning
curve. PNGs go to docs/screenshots/. Nothing of the data is written into the repository.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def wait(job, app, timeout=900):
    started = time.time()
    while not job.finished:
        app.processEvents()
        time.sleep(0.02)
        if time.time() - started > timeout:
            raise TimeoutError(job.description)
    if job.error is not None:
        raise RuntimeError(f"{job.description}: {job.error}")
    for _ in range(30):  # let the canvas and plots repaint
        app.processEvents()
        time.sleep(0.02)


def la2018() -> Path | None:
    for candidate in (os.environ.get("LA2018_DIR"), REPO.parent / "shared" / "data" / "la2018"):
        if candidate and (Path(candidate) / "images").is_dir():
            return Path(candidate)
    return None


def load_cases(count: int):
    """(name, image, labels, meta) of real cases, else phantoms with different seeds."""
    from napari_la_dinov2 import read_labels, read_volume
    from napari_la_dinov2._sample_data import make_sample

    root = la2018()
    if root is None:
        return [(f"phantom{i}", *make_sample(seed=i)) for i in range(count)]
    cases = []
    for case_id in (root / "cases.txt").read_text().split()[:count]:
        image, meta = read_volume(root / "images" / f"{case_id}.nii.gz")
        labels = read_labels(root / "labels" / f"{case_id}.nii.gz", meta).astype(np.uint8)
        cases.append((case_id, image, labels, meta))
    return cases


def snap(viewer, app, name: str, out: Path) -> None:
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    path = out / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False)
    print("wrote", path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def add_case(viewer, case):
    from napari_la_dinov2._widgets._layers import image_layer_kwargs, labels_layer_kwargs

    name, image, labels, meta = case
    image_layer = viewer.add_image(image, **image_layer_kwargs(meta, name=name), colormap="gray")
    mask = viewer.add_labels(labels, **labels_layer_kwargs(image_layer, f"{name} expert mask"))
    mask.opacity = 0.4
    from napari_la_dinov2._widgets._layers import slice_view_order

    axis = meta.through_plane_axis()
    viewer.dims.order = slice_view_order(axis)
    area = np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1).sum(1)
    viewer.dims.set_current_step(axis, int(np.argmax(area)))
    viewer.reset_view()
    return image_layer, mask


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    parser.add_argument("--model", default=None, help="model for Segment (default: fine-tuned)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="la-dinov2-screens-"))

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_la_dinov2 import VolumeMeta, build_model, save_checkpoint, write_labels
    from napari_la_dinov2._widgets._models import KNOWN_MODELS
    from napari_la_dinov2._widgets.compare import CompareWidget
    from napari_la_dinov2._widgets.fewshot import FewShotWidget
    from napari_la_dinov2._widgets.finetune import FinetuneWidget
    from napari_la_dinov2._widgets.segment import SegmentWidget

    cases = load_cases(7)
    # A small UNet, quick to train on a CPU: what the screenshots fine-tune and compare.
    small = build_model(
        "unet", channels=(16, 32, 64, 128), strides=(2, 2, 2), preprocessing={"input_size": 128}
    )
    start = str(save_checkpoint(small, work / "small-unet"))
    KNOWN_MODELS.add(start, "small-unet (untrained)")

    viewer = napari.Viewer(title="LA DINOv2", show=True)
    viewer.window.resize(1500, 950)
    app = QApplication.instance()

    # 1. Fine-tune on the expert masks of one case (as if they were corrected predictions).
    image, mask = add_case(viewer, cases[0])
    finetune = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(finetune, name="Fine-tune", area="right")
    finetune.picker.image.value, finetune.picker.mask.value = image, mask
    finetune.picker.add_pair()
    finetune.model.value = start
    finetune.epochs.value, finetune.batch_size.value, finetune.lr.value = args.epochs, 8, "1e-3"
    finetune.output.value = str(work / "finetune")
    wait(finetune.run(), app)
    snap(viewer, app, "finetune", out)
    tuned = finetune.checkpoint
    early = str(work / "finetune" / "last")  # same run: compare best against last
    viewer.window.remove_dock_widget(finetune.native)
    viewer.layers.clear()

    # 2. Segment another case with the new checkpoint (or --model).
    image, mask = add_case(viewer, cases[1])
    mask.visible = False
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment", area="right")
    segment.image.value = image
    segment.select_model(args.model or tuned)
    wait(segment.run(), app)
    segment.last_layer.opacity = 0.5
    viewer.layers.selection.active = segment.last_layer
    snap(viewer, app, "segment", out)
    viewer.window.remove_dock_widget(segment.native)

    # 3. Compare the checkpoints against the expert mask; select the first row, grid on.
    compare = CompareWidget(viewer)
    viewer.window.add_dock_widget(compare, name="Compare", area="right")
    viewer.layers.remove(segment.last_layer)
    mask.visible = False
    compare.image.value, compare.reference.value = image, mask
    KNOWN_MODELS.add(early, "finetune/last")
    compare.models.value = [tuned, early, start]
    wait(compare.run(), app)
    compare.table.selectRow(1)  # the fine-tuned model's worst slice
    snap(viewer, app, "compare", out)
    compare.grid.value = True
    snap(viewer, app, "compare_grid", out)
    compare.grid.value = False
    viewer.window.remove_dock_widget(compare.native)
    viewer.layers.clear()

    # 4. Few-shot: 1 and 3 training patients, two seeds, on 5 cases written to a folder (the
    # 24 slices around each atrium's centre, to keep the 4 runs short on a CPU).
    folder = work / "cases"
    for name, image_data, labels, meta in cases[2:7]:
        z0 = max(0, int(np.argmax(labels.sum(axis=(0, 1)))) - 12)
        shift = np.eye(4)
        shift[2, 3] = z0
        crop = VolumeMeta(meta.affine @ shift, (*labels.shape[:2], 24), meta.source)
        part = (slice(None), slice(None), slice(z0, z0 + 24))
        write_labels(folder / "images" / f"{name}.nii.gz", image_data[part].astype(np.uint8), crop)
        write_labels(folder / "labels" / f"{name}.nii.gz", labels[part], crop)
    fewshot = FewShotWidget(viewer)
    viewer.window.add_dock_widget(fewshot, name="Few-shot", area="right")
    add_case(viewer, cases[2])
    fewshot.picker.folder.value = str(folder)
    fewshot.models.value = [start]
    fewshot.patients.value, fewshot.seeds.value = "1, all", "0, 1"
    fewshot.epochs.value = 2
    fewshot.output.value = str(work / "fewshot")
    wait(fewshot.run(), app)
    snap(viewer, app, "fewshot", out)
    print("work folder (checkpoints, runs):", work)
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
