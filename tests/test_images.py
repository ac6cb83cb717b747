import io

import numpy as np
import pytest
from conftest import jpeg_bytes, real_photos
from PIL import Image

from headstart.backbones.preprocessing import Preprocessing
from headstart.data.images import decode_rgb


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(real_photos("train", "bees", 1)[0]).convert("RGB")


def test_cmyk_jpeg_becomes_rgb_with_the_same_colours(photo):
    decoded = decode_rgb(jpeg_bytes(photo.convert("CMYK"), quality=95))
    assert decoded.mode == "RGB" and decoded.size == photo.size
    difference = np.abs(np.asarray(decoded, float) - np.asarray(photo, float)).mean()
    assert difference < 8


def test_16_bit_grayscale_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    decoded = np.asarray(decode_rgb(encode(Image.fromarray(ramp), "PNG")))
    assert decoded.shape == (64, 64, 3)
    assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255
    assert 120 <= decoded[32, 0, 0] <= 135  # the middle of the ramp is mid-grey, not white


def test_exif_orientation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    decoded = decode_rgb(jpeg_bytes(photo, exif=exif.tobytes()))
    assert decoded.size == (photo.height, photo.width)


def test_alpha_is_flattened_onto_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    decoded = np.asarray(decode_rgb(encode(image, "PNG")))
    assert (decoded == 255).all()


def test_palette_and_grayscale_images_become_rgb(photo):
    for mode, format in (("P", "GIF"), ("L", "PNG"), ("1", "BMP"), ("RGB", "WEBP")):
        decoded = decode_rgb(encode(photo.convert(mode), format))
        assert decoded.mode == "RGB" and decoded.size == photo.size


@pytest.mark.parametrize(
    "data",
    [b"this is a text file, not a photo\n", b"\xff\xd8\xff\xe0" + b"\x00" * 200],
    ids=["text", "corrupt-jpeg"],
)
def test_unreadable_bytes_raise_value_error(data):
    with pytest.raises(ValueError, match=r"^[^<]*$"):  # a reason, not an object's repr
        decode_rgb(data)


def test_truncated_png_raises_value_error(photo):
    data = encode(photo, "PNG")
    with pytest.raises(ValueError):
        decode_rgb(data[: len(data) // 2])


def test_draft_decoding_gives_nearly_the_same_network_input():
    """Reduced-scale JPEG decoding is a speed-up, not a different picture."""
    preprocessing = Preprocessing((224, 224), "bicubic", 0.875, "center", (0.5,) * 3, (0.5,) * 3)
    big = Image.open(real_photos("train", "ants", 1, skip=3)[0]).convert("RGB")
    big = big.resize((big.width * 4, big.height * 4), Image.Resampling.BICUBIC)
    data = jpeg_bytes(big, quality=95)
    fast = preprocessing.pixels(data).astype(float)
    full = preprocessing.pixels_from_image(decode_rgb(data)).astype(float)
    assert fast.shape == full.shape == (224, 224, 3)
    assert np.abs(fast - full).mean() < 4
