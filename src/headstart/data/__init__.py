"""Stage 1: finding labelled images on disk, decoding them, and splitting them."""

from headstart.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "IMAGE_SUFFIXES": "headstart.data.images",
        "decode_rgb": "headstart.data.images",
        "is_image_file": "headstart.data.images",
        "Dataset": "headstart.data.sources",
        "Sample": "headstart.data.sources",
        "load_dataset": "headstart.data.sources",
    },
)
__all__ = ["IMAGE_SUFFIXES", "Dataset", "Sample", "decode_rgb", "is_image_file", "load_dataset"]
