"""``python -m napari_la_dinov2.cli`` (what ``torchrun -m napari_la_dinov2.cli`` runs)."""

import sys

from . import main

sys.exit(main())
