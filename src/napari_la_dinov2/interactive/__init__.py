"""Correction by clicks: a click model beside the default, one engine path for every door."""

from .clicks import Click, click_maps
from .network import ClickModel, load_click_model
from .refiner import PreparedClicks, Refiner
from .session import ClickSession
from .simulate import ErrorRegion, error_regions, next_click

__all__ = [
    "Click",
    "ClickModel",
    "ClickSession",
    "ErrorRegion",
    "PreparedClicks",
    "Refiner",
    "click_maps",
    "error_regions",
    "load_click_model",
    "next_click",
]
