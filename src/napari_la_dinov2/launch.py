"""The README's main job with a display: open napari on a volume, segment it, dock the widgets.

``launch()`` opens a volume (the LGE phantom by default) through the plugin's reader, puts the
slice axis on the slider, docks Segment, Correct, Fine-tune, Surface, Few-shot and Compare, and starts a
segmentation with the chosen model (the embedded default unless told otherwise) in a worker, so
the viewer is usable at once. A model that cannot be loaded is reported as a notification.
Without a display the command line writes the mask and a PNG overlay instead.
"""

from __future__ import annotations

import argparse

PLUGIN = "napari-la-dinov2"
WIDGETS = ("Segment", "Correct", "Fine-tune", "Surface", "Few-shot", "Compare")


def _show_slice_axis_on_slider(viewer, image, meta) -> None:
    from ._layer_geometry import layer_view_order

    # The reader already shows the slice axis first (napari's default order); a layer in the
    # file's own order (added by code) is reordered by the viewer instead.
    viewer.dims.order = layer_view_order(image, meta.through_plane_axis(), viewer.dims.ndim)
    axis = viewer.dims.order[-3]
    viewer.dims.set_current_step(axis, viewer.dims.nsteps[axis] // 2)


def _segment_in_front_and_fit(viewer, segment_dock) -> None:
    """The Segment tab in front and the slice fitted to the canvas, once the docks are laid out:
    a fit done before the docks take their width leaves the atrium cut off left and right, and
    the last dock tabified is the one in front until then."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    app.processEvents()  # the docks take their width, the canvas its final size
    segment_dock.show()
    segment_dock.raise_()
    app.processEvents()
    viewer.reset_view()


def launch(
    path: str | None = None,
    *,
    model: str = "default",
    device: str = "auto",
    segment: bool = True,
    viewer=None,
    block: bool = True,
):
    """Open ``path`` (or the phantom), dock the widgets and segment with ``model``.

    Returns ``(viewer, widgets, job)``: the widgets by name and the segmentation job (None when
    ``segment`` is False or the job could not start). ``block`` runs napari's event loop.
    """
    import napari

    from ._layer_geometry import META_KEY, layer_volume

    viewer = viewer or napari.Viewer(title="LA DINOv2: left-atrium segmentation")
    if path is None:
        layers = viewer.open_sample(PLUGIN, "lge_phantom")
    else:
        layers = viewer.open(str(path), plugin=PLUGIN)
    image = layers[0]
    meta = image.metadata.get(META_KEY) or layer_volume(image)[1]
    _show_slice_axis_on_slider(viewer, image, meta)
    widgets, docks = {}, {}
    for name in WIDGETS:
        docks[name], widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
    # The Segment tab in front: it is what a user needs first.
    _segment_in_front_and_fit(viewer, docks["Segment"])
    job = None
    if segment:
        segment_widget = widgets["Segment"]
        segment_widget.image.value = image
        segment_widget.select_model(model)
        segment_widget.device.value = device
        job = segment_widget.run()
    if block:
        napari.run()
    return viewer, widgets, job


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "path", nargs="?", help="a .nii, .nii.gz or .nrrd volume (default: phantom)"
    )
    parser.add_argument(
        "--model", default="default", help="default, a registry name, a folder or repo id"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-segment", action="store_true", help="only open the viewer")
    args = parser.parse_args(argv)
    launch(args.path, model=args.model, device=args.device, segment=not args.no_segment)


if __name__ == "__main__":
    main()
