"""Screenshots of each widget at work, for the README (run under a display or Xvfb):

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py --model default

Everything runs for real on real cases (../shared/data/la2018 or $LA2018_DIR; the synthetic
phantom where absent). With --model (e.g. the embedded 'default'), the cases shown are ones that
model never saw in training or validation; the Fine-tune widget fine-tunes it on one case, the
Segment widget runs it on another, Compare sets it against its fine-tuned copy and the expert
mask, and Few-shot draws a small learning curve (a tiny budget: 6 epochs on 24 slices of 5
cases). Without --model a small untrained UNet stands in. PNGs go to docs/screenshots/. Nothing
of the data is written into the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from screenshot_cases import fewshot_cases_folder, load_cases  # this folder is on sys.path

REPO = Path(__file__).resolve().parents[1]


def wait(job, app, timeout=3600):  # a shared 2-core machine can be very slow
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


def snap(viewer, app, name: str, out: Path, fit: bool = True) -> None:
    """Screenshot of the whole window; ``fit``: the slice (or grid) fitted to the canvas first
    (``fit=False`` shows the view as the widgets left it: the demo's first screen, the surface)."""
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    # Fit the whole slice (or grid) to the canvas as it is now, after the dock took its width;
    # a reset done before the dock opened leaves the view zoomed in on a part of the slice.
    if fit:
        viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    path = out / f"{name}.png"
    viewer.screenshot(str(path), canvas_only=False)
    print("wrote", path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def atrium_slice(labels: np.ndarray, axis: int) -> int:
    """The slice along ``axis`` where the expert atrium is largest: a middle slice of it."""
    area = np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1).sum(1)
    return int(np.argmax(area))


def colour_labels(layer, colour: str, contour: int = 0) -> None:
    from napari.utils.colormaps import DirectLabelColormap

    layer.colormap = DirectLabelColormap(color_dict={None: "transparent", 1: colour})
    layer.contour = contour


def dock(viewer, app, widget, name: str, width: int = 560) -> None:
    """Dock ``widget`` on the right at ``width`` pixels, leaving the canvas the rest."""
    from qtpy.QtCore import Qt

    dock_widget = viewer.window.add_dock_widget(widget, name=name, area="right")
    app.processEvents()
    viewer.window._qt_window.resizeDocks([dock_widget], [width], Qt.Orientation.Horizontal)


def add_case(viewer, case):
    """The case as File > Open shows it: the slices on the slider, the axial plane on screen."""
    from napari_la_dinov2._layer_geometry import display_layer, labels_layer_kwargs, on_layer_grid

    name, image, labels, meta = case
    data, kwargs = display_layer(image, meta, name=name)
    image_layer = viewer.add_image(data, **kwargs, colormap="gray")
    shown = on_layer_grid(image_layer, labels)
    mask = viewer.add_labels(shown, **labels_layer_kwargs(image_layer, f"{name} expert mask"))
    mask.opacity = 0.4
    show_atrium_slice(viewer, image_layer, labels, meta)
    viewer.reset_view()
    return image_layer, mask


def show_atrium_slice(viewer, image_layer, labels, meta) -> None:
    """Move the slider (the layer's first axis) to the slice where the atrium is largest."""
    from napari_la_dinov2._layer_geometry import file_to_layer_index

    axis = meta.through_plane_axis()
    point = np.zeros(3)
    point[axis] = atrium_slice(labels, axis)
    viewer.dims.set_current_step(0, int(round(file_to_layer_index(image_layer, point)[0])))


def loop_screens(viewer, app, case, base: str, work: Path, out: Path) -> None:
    """The correction loop with Segment and Fine-tune docked together (both fit 1600 x 1000):
    segment with the doubt shown, go to the most doubtful slice, then a quick fine-tuning round
    on the model's mask (standing in for the corrected one)."""
    from napari_la_dinov2._widgets.finetune import FinetuneWidget
    from napari_la_dinov2._widgets.segment import SegmentWidget

    image, mask = add_case(viewer, case)
    mask.visible = False
    segment, finetune = SegmentWidget(viewer), FinetuneWidget(viewer)
    dock(viewer, app, segment, "Segment")
    dock(viewer, app, finetune, "Fine-tune")
    segment.image.value = image
    segment.select_model(base)
    wait(segment.run(), app)
    colour_labels(segment.last_layer, "#00e5ff", contour=1)
    segment.navigator.go_next()
    viewer.layers.selection.active = segment.last_layer
    snap(viewer, app, "segment_doubt", out)
    finetune.picker.image.value, finetune.picker.mask.value = image, segment.last_layer
    finetune.model.value = base
    finetune.output.value = str(work / "quick")
    wait(finetune.run(), app)
    snap(viewer, app, "correction_loop", out)
    print("window minimum height", viewer.window._qt_window.minimumSizeHint().height())
    for widget in (segment, finetune):
        viewer.window.remove_dock_widget(widget.native)
    viewer.layers.clear()


def demo_screen(case, model: str, work: Path, out: Path) -> None:
    """What ``python -m napari_la_dinov2.launch CASE`` shows once its segmentation is done,
    as the demo leaves it (no refit here: the demo's own fit is what is shown)."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_la_dinov2 import write_labels
    from napari_la_dinov2.launch import launch

    name, image, _, meta = case
    path = work / f"{name}.nii.gz"
    write_labels(path, image.astype(np.uint8), meta)  # 8-bit as LA 2018; opened by the reader
    viewer = napari.Viewer(title="LA DINOv2: left-atrium segmentation", show=True)
    viewer.window.resize(1580, 960)
    viewer, _, job = launch(str(path), model=model, viewer=viewer, block=False)
    app = QApplication.instance()
    wait(job, app)
    snap(viewer, app, "demo", out, fit=False)
    viewer.close()


def surface_screen(viewer, app, case, out: Path) -> None:
    """Surface: the 3D surface of an expert mask, as "Show 3D surface" leaves the view."""
    from napari_la_dinov2._widgets.surface import SurfaceWidget

    image, mask = add_case(viewer, case)
    surface = SurfaceWidget(viewer)
    dock(viewer, app, surface, "Surface", width=420)
    surface.image.value, surface.mask.value = image, mask
    wait(surface.show_surface(), app)
    snap(viewer, app, "surface", out, fit=False)
    viewer.dims.ndisplay = 2
    viewer.window.remove_dock_widget(surface.native)
    viewer.layers.clear()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    parser.add_argument(
        "--model", default=None, help="model shown (e.g. 'default'; else a small untrained UNet)"
    )
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs")
    parser.add_argument("--fewshot-epochs", type=int, default=6)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fine-tune the model for Compare with one quick round instead of --epochs",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=["all"],
        choices=["all", "demo", "surface", "loop", "finetune", "segment", "compare", "fewshot"],
        help="demo: the demo's first screen; surface: the 3D surface; loop: only the correction "
        "loop; finetune, segment, compare, fewshot: only these screenshots (the steps they "
        "need still run)",
    )
    return parser


def wanted(args, name: str) -> bool:
    """Whether --only asks for the screenshot ``name``."""
    return "all" in args.only or name in args.only


def small_unet(work: Path) -> str:
    """A small untrained UNet checkpoint, quick to train on a CPU: the stand-in model without
    --model, and the from-scratch line of the few-shot curve."""
    from napari_la_dinov2 import build_model, save_checkpoint
    from napari_la_dinov2._widgets._models import KNOWN_MODELS

    small = build_model(
        "unet", channels=(16, 32, 64, 128), strides=(2, 2, 2), preprocessing={"input_size": 128}
    )
    scratch = str(save_checkpoint(small, work / "small-unet"))
    KNOWN_MODELS.add(scratch, "small-unet (untrained)")
    return scratch


def finetune_screen(viewer, app, case, base: str, args, work: Path, out: Path) -> str:
    """1. Fine-tune on the expert masks of one case (as if they were corrected predictions);
    returns the new checkpoint."""
    from napari_la_dinov2._widgets._models import KNOWN_MODELS
    from napari_la_dinov2._widgets.finetune import FinetuneWidget

    # Registered ahead under a name that says what it is (the widget keeps a known label).
    KNOWN_MODELS.add(work / "finetune" / "best", f"{KNOWN_MODELS.label_of(base)} fine-tuned")
    image, mask = add_case(viewer, case)
    finetune = FinetuneWidget(viewer)
    dock(viewer, app, finetune, "Fine-tune")
    finetune.picker.image.value, finetune.picker.mask.value = image, mask
    finetune.picker.add_pair()
    finetune.model.value = base
    finetune.quick.value = args.quick  # else a full run of --epochs for this picture
    # A trained model only needs a gentle nudge; an untrained one needs the usual rate.
    lr = "1e-4" if args.model else "1e-3"
    finetune.epochs.value, finetune.batch_size.value, finetune.lr.value = args.epochs, 8, lr
    finetune.output.value = str(work / "finetune")
    wait(finetune.run(), app)
    if wanted(args, "finetune"):
        snap(viewer, app, "finetune", out)
    viewer.window.remove_dock_widget(finetune.native)
    viewer.layers.clear()
    return finetune.checkpoint


def segment_screen(viewer, app, case, base: str, args, out: Path):
    """2. Segment an unseen case with the model; returns its image and expert mask layers and
    the model's mask layer."""
    from napari_la_dinov2._widgets.segment import SegmentWidget

    image, mask = add_case(viewer, case)
    mask.visible = False
    segment = SegmentWidget(viewer)
    dock(viewer, app, segment, "Segment")
    segment.image.value = image
    segment.select_model(base)
    wait(segment.run(), app)
    segment.last_layer.opacity = 0.5
    colour_labels(segment.last_layer, "#ff7f0e")
    viewer.layers.selection.active = segment.last_layer
    if wanted(args, "segment"):
        snap(viewer, app, "segment", out)
    viewer.window.remove_dock_widget(segment.native)
    return image, mask, segment.last_layer


def compare_screens(viewer, app, case, layers, models: list[str], args, out: Path) -> None:
    """3. Compare the model and its fine-tuned copy against the expert mask (a yellow contour),
    on the slice where the atrium is largest, where they disagree in magenta; then the same
    in grid view, one panel per mask, titled."""
    from napari_la_dinov2._widgets.compare import CompareWidget, viewer_grid

    image, mask, segmented = layers
    compare = CompareWidget(viewer)
    dock(viewer, app, compare, "Compare", width=620)
    viewer.layers.remove(segmented)
    compare.image.value, compare.reference.value = image, mask
    compare.models.value = models
    wait(compare.run(), app)
    for layer in compare.model_layers:
        layer.contour, layer.opacity = 2, 1.0
    mask.visible = True
    colour_labels(mask, "#ffff00", contour=2)
    mask.opacity = 1.0
    show_atrium_slice(viewer, image, case[2], case[3])
    viewer.layers.selection.active = compare.model_layers[0]
    if wanted(args, "compare"):
        snap(viewer, app, "compare", out)
    # The canvas is tall and the slices wide: one column of panels (expert, each model, their
    # disagreement) uses it better than napari's automatic 2 x 2.
    viewer_grid(viewer).shape = (2 + len(compare.model_layers), 1)
    compare.grid.value = True
    if wanted(args, "compare"):
        snap(viewer, app, "compare_grid", out)
    compare.grid.value = False
    viewer.window.remove_dock_widget(compare.native)
    viewer.layers.clear()


def fewshot_screen(viewer, app, cases, models: list[str], args, work: Path, out: Path) -> None:
    """4. Few-shot: 1 and all (3) training patients, two seeds, on 5 cases written to a
    folder."""
    from napari_la_dinov2._widgets.fewshot import FewShotWidget

    folder = fewshot_cases_folder(cases[2:7], work / "cases")
    fewshot = FewShotWidget(viewer)
    dock(viewer, app, fewshot, "Few-shot", width=640)  # the plot and the whole table
    add_case(viewer, cases[2])
    fewshot.picker.folder.value = str(folder)
    fewshot.models.value = models
    fewshot.patients.value, fewshot.seeds.value = "1, all", "0, 1"
    fewshot.epochs.value = args.fewshot_epochs
    fewshot.output.value = str(work / "fewshot")
    wait(fewshot.estimate(), app)  # the time estimate stays on the dock
    wait(fewshot.run(), app)
    snap(viewer, app, "fewshot", out)


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="la-dinov2-screens-"))

    import napari
    from qtpy.QtWidgets import QApplication

    cases = load_cases(7, args.model)
    scratch = small_unet(work)
    base = args.model or scratch
    if wanted(args, "demo"):
        demo_screen(cases[1], base, work, out)
    viewer = napari.Viewer(title="LA DINOv2", show=True)
    viewer.window.resize(1580, 960)
    app = QApplication.instance()
    if wanted(args, "surface"):
        surface_screen(viewer, app, cases[0], out)
    if wanted(args, "loop"):
        loop_screens(viewer, app, cases[1], base, work, out)
    if {"all", "finetune", "segment", "compare", "fewshot"} & set(args.only):
        tuned = finetune_screen(viewer, app, cases[0], base, args, work, out)
        layers = segment_screen(viewer, app, cases[1], base, args, out)
        compare_screens(viewer, app, cases[1], layers, [base, str(tuned)], args, out)
        if wanted(args, "fewshot"):
            models = [base, scratch] if args.model else [scratch]
            fewshot_screen(viewer, app, cases, models, args, work, out)
            print("work folder (checkpoints, runs):", work)
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
