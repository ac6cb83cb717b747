import io
from pathlib import Path

import hostile
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
    return Image.open(real_photos("sunflower", 1)[0]).convert("RGB")


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
    big = Image.open(real_photos("daisy", 1, skip=3)[0]).convert("RGB")
    big = big.resize((big.width * 4, big.height * 4), Image.Resampling.BICUBIC)
    data = jpeg_bytes(big, quality=95)
    fast = preprocessing.pixels(data).astype(float)
    full = preprocessing.pixels_from_image(decode_rgb(data)).astype(float)
    assert fast.shape == full.shape == (224, 224, 3)
    assert np.abs(fast - full).mean() < 4


PREPROCESSING = Preprocessing((288, 288), "bicubic", 0.875, "center", (0.5,) * 3, (0.5,) * 3)


@pytest.mark.parametrize("size", [(2000, 1), (1, 20000), (1_000_000, 1)])
def test_strips_are_refused_before_decoding(size):
    """Before: the short side was scaled up first, so 2000x1 became a 658,000x329 image."""
    with pytest.raises(ValueError, match="a strip, not a photo"):
        PREPROCESSING.pixels(hostile.strip(*size))


@pytest.mark.parametrize("size", [(4000, 40), (40, 4000), (100, 1)])
def test_long_images_cost_no_more_than_the_output(size):
    pixels = PREPROCESSING.pixels(hostile.strip(*size))
    assert pixels.shape == (288, 288, 3)
    assert tuple(pixels[144, 144]) == (200, 30, 30)


def test_crop_box_gives_the_same_pixels_as_resize_then_crop(photo):
    scaled = photo.resize(PREPROCESSING.scaled_size(*photo.size), Image.Resampling.BICUBIC)
    left, top = round((scaled.width - 288) / 2), round((scaled.height - 288) / 2)
    expected = np.asarray(scaled.crop((left, top, left + 288, top + 288)), dtype=float)
    ours = PREPROCESSING.pixels_from_image(photo).astype(float)
    assert np.abs(ours - expected).max() <= 1


def test_augmentation_resize_of_a_strip_is_bounded():
    image = decode_rgb(hostile.strip(10000, 100))
    resized = PREPROCESSING.resized(image)
    assert resized.width * resized.height <= 4 * 329 * 329


def test_large_16_bit_png_is_shrunk_before_conversion():
    """Before: 1.1 GB for a 39.6 MP grey PNG (float64 copies of the whole image)."""
    ramp = np.tile(np.linspace(0, 65535, 6300).astype(np.uint16), (6300, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    del ramp
    import tracemalloc

    tracemalloc.start()
    pixels = PREPROCESSING.pixels(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert pixels.shape == (288, 288, 3)
    assert 100 < pixels[144, 144, 0] < 160  # the middle of the ramp stays mid-grey
    assert peak < 100e6  # NumPy's share; Pillow's own decode buffer is bounded by max_pixels


def test_crafted_tiff_is_a_reason_not_a_type_error():
    with pytest.raises(ValueError):
        decode_rgb(hostile.rational_strip_offsets_tiff())


@pytest.mark.parametrize("name", sorted(hostile.other_formats()))
def test_only_documented_formats_are_parsed(name):
    with pytest.raises(ValueError, match="unsupported image format"):
        decode_rgb(hostile.other_formats()[name])


def test_memory_error_while_decoding_is_a_reason(monkeypatch, photo):
    def exhausted(*args, **kwargs):
        raise MemoryError

    from PIL import ImageFile

    data = encode(photo, "PNG")
    monkeypatch.setattr(ImageFile.ImageFile, "load", exhausted)
    with pytest.raises(ValueError, match="memory"):
        decode_rgb(data)


def test_a_small_file_claiming_50_megapixels_is_refused_before_decoding():
    """Found by the fuzz suite: a mutated 1.6 KB WebP whose header says 8544x5932; decoding it
    at full size took 200 MB before failing."""
    data = (Path(__file__).parent / "data" / "fuzz-claims-50mp.webp").read_bytes()
    with pytest.raises(ValueError, match="over the limit of 40000000"):
        decode_rgb(data, draft=PREPROCESSING.scaled_size)
