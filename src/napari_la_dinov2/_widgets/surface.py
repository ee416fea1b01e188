"""Surface widget: the 3D surface of a left-atrium mask in napari, and its export as a mesh.

"Show 3D surface" builds the mesh of a Labels layer (``mesh.mesh_from_mask`` in a worker, on
the mask in its image's file voxel order) and adds it as a Surface layer in the image's world
frame, then shows the viewer in 3D, fitted on the surface, with the masks and the doubt layers
hidden (they draw voxel blocks over it; shown again back in 2D). The Surface layer keeps the
image's slider: its extent is the image's, and its scale, isotropic, no finer than the image's
voxels, so the slider still counts the image's slices after it. "Export mesh" writes the same mesh (LPS, as 3D Slicer
exports models, or RAS) as STL, OBJ, PLY or VTK, chosen in a save dialog.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, Container, FileEdit, Label, PushButton, create_widget
from napari.layers import Image, Labels, Surface
from napari.utils.notifications import show_error, show_info

from .._layer_geometry import layer_volume, mask_of, scanner_to_world
from ..errors import InputError
from ..mesh import MESH_SUFFIXES, check_mesh_path, mesh_from_mask, write_mesh
from ._doubt import is_doubt_layer
from ._options import status_line
from ._status import failure_text, for_the_gui
from ._worker import Job

SURFACE_COLOUR = "#e8a33c"  # warm, distinct from napari's label colours and the grey image
MESH_FILTER = "Meshes (" + " ".join(f"*{suffix}" for suffix in MESH_SUFFIXES) + ")"


def mask_and_meta(labels_layer: Labels, image_layer: Image):
    """(mask copy in the image's file voxel order, the image's meta); InputError when the mask
    is not on that image's grid. Read in the GUI thread: painting later changes nothing."""
    _, meta = layer_volume(image_layer)
    mask = np.asarray(mask_of(labels_layer, image_layer))
    if mask.shape != tuple(meta.shape):
        raise InputError(
            f"the mask '{labels_layer.name}' has shape {mask.shape} but the image "
            f"'{image_layer.name}' has {tuple(meta.shape)}; pick the mask made on that image."
        )
    return mask.copy(), meta


class SurfaceOnImageGrid(Surface):
    """A Surface layer that leaves napari's sliders as its image set them.

    napari's slider range is the union of the layers' extents and its step the smallest layer
    scale: a surface in world mm (scale 1) would turn 88 steps of 1.25 mm into 109 of 1 mm, some
    of them repeating a slice. So the vertices are stored divided by one isotropic scale, the
    image's coarsest voxel size (an isotropic scale keeps the lighting's normals true, an
    anisotropic one would skew them), and the extent napari's dims read is the image's voxel
    box. The fitted camera (the augmented extent) still sees the surface's own bounds.
    """

    def __init__(self, data, *, image_box: np.ndarray, **kwargs):
        self._image_box = np.asarray(image_box, dtype=float)  # world, voxel centres, (2, 3)
        super().__init__(data, **kwargs)

    @property
    def _type_string(self) -> str:  # napari's writers and readers know it as a surface
        return "surface"

    @property
    def _extent_data(self) -> np.ndarray:
        return self._image_box / np.asarray(self.scale, dtype=float)

    @property
    def _extent_data_augmented(self) -> np.ndarray:
        return Surface._extent_data.fget(self)


def add_surface_layer(viewer, mesh, meta, image_layer: Image, name: str):
    """Add ``mesh`` (scanner mm, LPS) as a Surface layer over ``image_layer``, in its world
    frame, without changing the sliders (see SurfaceOnImageGrid)."""
    vertices = scanner_to_world(image_layer, mesh.vertices, meta)
    step = float(np.max(np.abs(image_layer.extent.step)))
    layer = SurfaceOnImageGrid(
        (vertices / step, np.asarray(mesh.faces), np.ones(len(vertices))),
        image_box=image_layer.extent.world,
        scale=(step, step, step),
        name=name,
        colormap=_single_colour(SURFACE_COLOUR),
        contrast_limits=(0.0, 1.0),
        shading="smooth",
        axis_labels=tuple(image_layer.axis_labels),
        units=tuple(str(u) for u in image_layer.units),
    )
    return viewer.add_layer(layer)


def _single_colour(colour: str):
    from napari.utils.colormaps import Colormap

    return Colormap([colour, colour], name="la_surface")


class SurfaceWidget(Container):
    """Plugins > LA DINOv2 > Surface."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        # Layer pickers by annotation: napari keeps them in step with the layer list.
        self.image = create_widget(annotation=Image, label="Image")
        self.mask = create_widget(annotation=Labels, label="Mask")
        self.show_button = PushButton(text="Show 3D surface")
        self.path = FileEdit(label="Mesh file", mode="w", filter=MESH_FILTER, value="")
        self.path.tooltip = "STL, OBJ, PLY or VTK, by the suffix"
        self.ras = CheckBox(text="RAS coordinates (default LPS, as 3D Slicer)", value=False)
        self.overwrite = CheckBox(text="Replace an existing file", value=False)
        self.export_button = PushButton(text="Export mesh")
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.image,
                self.mask,
                self.show_button,
                self.path,
                self.ras,
                self.overwrite,
                self.export_button,
                self.status,
            ]
        )
        self.job: Job | None = None
        self.surface_layer = None
        self._hidden_in_3d: list = []  # layers hidden while the surface is shown in 3D
        self.exported: Path | None = None
        napari_viewer.dims.events.ndisplay.connect(self._ndisplay_changed)
        status_line(self.status)
        self.show_button.changed.connect(self.show_surface)
        self.export_button.changed.connect(self.export)

    def _chosen(self):
        if self.image.value is None or self.mask.value is None:
            raise InputError("open an image and its mask (a Labels layer) first.")
        return mask_and_meta(self.mask.value, self.image.value)

    def show_surface(self, _=None) -> Job | None:
        """Mesh the mask in a worker, then add the Surface layer and switch to 3D."""
        try:
            mask, meta = self._chosen()
        except InputError as error:
            show_error(f"Surface: {error}")
            return None
        image_layer, mask_layer = self.image.value, self.mask.value
        name = f"{mask_layer.name} surface"

        def shown(mesh):
            if self.surface_layer is not None and self.surface_layer in self.viewer.layers:
                self.viewer.layers.remove(self.surface_layer)  # one surface, the latest
            self.surface_layer = add_surface_layer(self.viewer, mesh, meta, image_layer, name)
            self._show_in_3d()
            self.status.value = (
                f"surface of {len(mesh.faces)} triangles; masks and doubt hidden in 3D "
                "(shown again in 2D)"
            )

        return self._start(
            lambda report, stop: mesh_from_mask(mask, meta), f"Meshing '{name}'", shown
        )

    def _show_in_3d(self) -> None:
        """3D, the camera fitted on the surface, and the layers that would draw over it hidden:
        every mask (napari draws a mask's voxels as blocks in 3D) and doubt layer, until the
        viewer is back in 2D."""
        clutter = [
            layer
            for layer in self.viewer.layers
            if layer.visible and (isinstance(layer, Labels) or is_doubt_layer(layer))
        ]
        for layer in clutter:
            layer.visible = False
        self._hidden_in_3d = [*self._hidden_in_3d, *clutter]
        self.viewer.dims.ndisplay = 3
        self.viewer.reset_view(layers=[self.surface_layer])

    def _ndisplay_changed(self, event=None) -> None:
        """Back in 2D: the layers hidden for the 3D surface are shown again."""
        if self.viewer.dims.ndisplay != 2:
            return
        for layer in self._hidden_in_3d:
            if layer in self.viewer.layers:
                layer.visible = True
        self._hidden_in_3d = []

    def export(self, _=None) -> Job | None:
        """Write the mask's mesh to the chosen file (in a worker)."""
        try:
            path = str(self.path.value)
            if path in ("", "."):
                raise InputError("choose a mesh file first (.stl, .obj, .ply or .vtk).")
            path = check_mesh_path(path, self.overwrite.value)
            mask, meta = self._chosen()
        except InputError as error:
            show_error(f"Export mesh: {for_the_gui(str(error))}")
            return None
        ras, overwrite = self.ras.value, self.overwrite.value

        def job(report, stop):
            return write_mesh(mesh_from_mask(mask, meta, ras=ras), path, overwrite=overwrite)

        def written(written_path):
            self.exported = written_path
            self.status.value = f"mesh written: {written_path.name}"
            show_info(f"mesh written to {written_path} ({'RAS' if ras else 'LPS'} mm)")

        return self._start(job, f"Exporting the mesh to {path.name}", written)

    def _start(self, job, description: str, on_done) -> Job:
        self.show_button.enabled = self.export_button.enabled = False
        self.status.value = description + "..."
        self.job = Job(job, description=description, on_done=on_done, on_finished=self._finished)
        return self.job

    def _finished(self) -> None:
        self.show_button.enabled = self.export_button.enabled = True
        if self.job is not None and self.job.error is not None:
            self.status.value = failure_text(self.job.error)
