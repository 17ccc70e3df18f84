"""Data for any feature schema: readers of the schema's source layout, the canonical
frames, their checks, the synthetic generator and writers of every layout."""

from datagen.canonical import read_canonical, write_canonical
from datagen.frames import DataFormatError, RawData, SplitData, split
from datagen.layouts import write_layout
from datagen.readers import read_data
from datagen.synthetic import generate

__all__ = [
    "DataFormatError",
    "RawData",
    "SplitData",
    "generate",
    "read_canonical",
    "read_data",
    "split",
    "write_canonical",
    "write_layout",
]
