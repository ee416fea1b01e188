"""Surface widget: the 3D surface of a left-atrium mask in napari, and its export as a mesh.

"Show 3D surface" builds the mesh of a Labels layer (``mesh.mesh_from_mask`` in a worker, on
the mask in its image's file voxel order) and adds it as a Surface layer in the image's world
frame, then shows the viewer in 3D. "Export mesh" writes the same mesh (LPS, as 3D Slicer
exports models, or RAS) as STL, OBJ, PLY or VTK, chosen in a save dialog.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, Container, FileEdit, Label, PushButton, create_widget
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info

from ..errors import InputError
from ..mesh import MESH_SUFFIXES, check_mesh_path, mesh_from_mask, write_mesh
from ._layers import layer_volume, mask_of, scanner_to_world
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


def add_surface_layer(viewer, mesh, meta, image_layer: Image, name: str):
    """Add ``mesh`` (scanner mm, LPS) as a Surface layer over ``image_layer``. The vertices are
    given in world coordinates with no layer transform, so the lighting sees the true shape
    (an anisotropic layer scale would skew the normals)."""
    vertices = scanner_to_world(image_layer, mesh.vertices, meta)
    return viewer.add_surface(
        (vertices, np.asarray(mesh.faces), np.ones(len(vertices))),
        name=name,
        colormap=_single_colour(SURFACE_COLOUR),
        contrast_limits=(0.0, 1.0),
        shading="smooth",
        axis_labels=tuple(image_layer.axis_labels),
        units=tuple(str(u) for u in image_layer.units),
    )


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
        self.exported: Path | None = None
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
            # In 3D napari draws the mask's voxels as blocks over the surface: hidden (its eye
            # button in the layer list shows it again).
            mask_layer.visible = False
            self.viewer.dims.ndisplay = 3
            self.status.value = f"surface of {len(mesh.faces)} triangles; mask hidden"

        return self._start(
            lambda report, stop: mesh_from_mask(mask, meta), f"Meshing '{name}'", shown
        )

    def export(self, _=None) -> Job | None:
        """Write the mask's mesh to the chosen file (in a worker)."""
        try:
            path = str(self.path.value)
            if path in ("", "."):
                raise InputError("choose a mesh file first (.stl, .obj, .ply or .vtk).")
            path = check_mesh_path(path, self.overwrite.value)
            mask, meta = self._chosen()
        except InputError as error:
            show_error(f"Export mesh: {error}")
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
            self.status.value = "stopped: " + str(self.job.error)[:80]
