"""Stage 1: finding labelled images on disk, decoding them, and splitting them."""

from headstart.data.images import IMAGE_SUFFIXES, decode_rgb, is_image_file
from headstart.data.sources import Dataset, Sample, load_dataset

__all__ = ["IMAGE_SUFFIXES", "Dataset", "Sample", "decode_rgb", "is_image_file", "load_dataset"]
