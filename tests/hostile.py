"""Hostile image files, built from real photos: shared by the decoding, fuzz and server tests."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def strip(width: int, height: int) -> bytes:
    """A tiny PNG of extreme aspect ratio (2000x1 is 90 bytes)."""
    return encode(Image.new("RGB", (width, height), (200, 30, 30)), "PNG")


def rational_strip_offsets_tiff() -> bytes:
    """A 16-bit TIFF whose StripOffsets tag (273) is typed RATIONAL: Pillow raises TypeError."""
    data = bytearray(encode(Image.fromarray(np.zeros((10, 12), np.uint16)), "TIFF"))
    little = data[:2] == b"II"
    order = "<" if little else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    (count,) = struct.unpack_from(order + "H", data, ifd)
    for entry in range(count):
        offset = ifd + 2 + 12 * entry
        tag, kind = struct.unpack_from(order + "HH", data, offset)
        if tag == 273:
            assert kind in (3, 4)
            struct.pack_into(order + "H", data, offset + 2, 5)
            return bytes(data)
    raise AssertionError("no StripOffsets tag")


def other_formats() -> dict[str, bytes]:
    """Files Pillow can open but headstart must not parse."""
    image = Image.new("RGB", (16, 16), (10, 200, 10))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n"
    return {
        "tga": encode(image, "TGA"),
        "sgi": encode(image, "SGI"),
        "ico": encode(image, "ICO"),
        "eps": eps,
        "pcx": encode(image, "PCX"),
    }
