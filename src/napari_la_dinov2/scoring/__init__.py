"""Scoring masks and models against references: ``metrics`` (Dice, IoU, HD95, ASSD, LA volume
of one mask pair, and the tables of them), ``evaluation`` (predicted masks against references,
from files, folders or memory), ``stats`` (bootstrap intervals and paired tests over cases),
``report`` (a comparison of models laid out as tables) and ``model_cost`` (parameters, GFLOPs
and seconds of a model). Measuring one atrium (volume, area, diameters) is ``measures``, beside
this package: the engine needs it for every mask, with no reference."""
