"""Image decoding: modes, EXIF, animation, bomb guard and every kind of bad file."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from marginface.align import DecodedImage, ImageWarning, decode_image, read_image
from marginface.align.image import ensure_rgb_array, resize_longest_side
from marginface.errors import ImageError


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 6 % 256, (x + y) * 2 % 256], axis=2).astype(np.uint8)


def test_rgb_png_roundtrip_and_path(tmp_path):
    rgb = _gradient()
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(read_image(str(path)), rgb)
    np.testing.assert_array_equal(read_image(path.read_bytes()), rgb)


def test_grayscale_palette_and_gray_alpha():
    gray = np.arange(40 * 60, dtype=np.uint8).reshape(40, 60)
    out = read_image(_encode(Image.fromarray(gray, "L"), "PNG"))
    assert out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out[:, :, 0], gray)
    np.testing.assert_array_equal(out[:, :, 2], gray)

    rgb = _gradient()
    pal = Image.fromarray(rgb).quantize(colors=64)
    out = read_image(_encode(pal, "PNG"))
    expected = np.asarray(pal.convert("RGB"))
    np.testing.assert_array_equal(out, expected)

    la = Image.merge("LA", [Image.fromarray(gray), Image.new("L", (60, 40), 255)])
    np.testing.assert_array_equal(read_image(_encode(la, "PNG"))[:, :, 1], gray)


def test_rgba_transparent_pixels_become_white():
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:10, :, 3] = 255  # top half opaque red, bottom transparent
    out = read_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[15, 0], [255, 255, 255])


def test_cmyk_jpeg_converts_to_rgb():
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    rgb[:, :16] = [220, 30, 30]
    rgb[:, 16:] = [30, 30, 220]
    cmyk = Image.fromarray(rgb).convert("CMYK")
    out = read_image(_encode(cmyk, "JPEG", quality=95))
    assert out.shape == (32, 32, 3)
    left, right = out[:, :12].mean(axis=(0, 1)), out[:, 20:].mean(axis=(0, 1))
    assert left[0] > 150 > left[2] and right[2] > 150 > right[0]


def test_16_bit_png_scaled_to_8_bit():
    values = np.array([[0, 257 * 10], [257 * 128, 65535]], dtype=np.uint16)
    img = Image.fromarray(np.repeat(np.repeat(values, 8, 0), 8, 1))
    assert img.mode.startswith("I")
    decoded = decode_image(_encode(img, "PNG"))
    out = decoded.pixels
    assert out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, 8, 0] == 10 and out[8, 0, 0] == 128 and out[8, 8, 1] == 255


def test_exif_orientation_is_applied():
    rgb = np.zeros((30, 50, 3), dtype=np.uint8)
    rgb[:, :10] = 255  # white band on the left
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(_encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.pixels.shape == (50, 30, 3)
    # after a clockwise turn the band that was on the left is at the top
    assert decoded.pixels[:8].mean() > 200 and decoded.pixels[-20:].mean() < 30
    assert any("EXIF" in n for n in decoded.notes)


def test_animated_gif_gives_first_frame_and_says_so():
    frames = [Image.new("RGB", (24, 24), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decode_image(data)
    assert isinstance(decoded, DecodedImage)
    assert decoded.animated and decoded.n_frames == 3
    assert decoded.pixels[5, 5, 0] > 200 and decoded.pixels[5, 5, 1] < 50
    assert "first frame" in decoded.notes[-1]
    with pytest.warns(ImageWarning, match="first frame"):
        read_image(data)


def test_single_frame_gif_is_not_flagged():
    data = _encode(Image.new("RGB", (24, 24), (10, 20, 30)), "GIF")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = decode_image(data)
    assert not decoded.animated


def test_decompression_bomb_guard_reads_only_the_header():
    data = _encode(Image.new("L", (4000, 3000)), "PNG")
    with pytest.raises(ImageError, match="decompression-bomb"):
        read_image(data, max_pixels=10_000_000)
    assert read_image(data, max_pixels=None).shape == (3000, 4000, 3)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"this is certainly not an image, just some text\n" * 3, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "corrupt|not an image|truncated"),
    ],
)
def test_bad_bytes(payload, message):
    with pytest.raises(ImageError, match=message):
        read_image(payload)


def test_truncated_jpeg(tmp_path):
    data = _encode(Image.fromarray(_gradient(200, 200)), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as info:
        read_image(path)
    assert "cut.jpg" in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(path)


def test_arrays_are_normalised():
    gray = np.full((10, 12), 7, dtype=np.uint8)
    assert ensure_rgb_array(gray).shape == (10, 12, 3)
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    assert ensure_rgb_array(rgba).shape == (10, 12, 3)
    floats = np.full((4, 4, 3), 0.5, dtype=np.float32)
    assert ensure_rgb_array(floats)[0, 0, 0] == 128
    with pytest.raises(ImageError):
        ensure_rgb_array(np.zeros((3, 3, 2), dtype=np.uint8))


def test_resize_longest_side():
    img = np.zeros((3000, 1500, 3), dtype=np.uint8)
    out, scale = resize_longest_side(img, 1000)
    assert out.shape[:2] == (1000, 500) and scale == pytest.approx(1 / 3)
    same, one = resize_longest_side(img[:100, :100], 1000)
    assert one == 1.0 and same.shape == (100, 100, 3)


@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("progressive", [False, True])
def test_plain_jpegs_take_the_fast_path_with_pillows_pixels(subsampling, progressive):
    from marginface.imaging import _decode_with_pillow, _plain_jpeg_header

    rgb = np.random.default_rng(subsampling).integers(0, 256, (63, 81, 3), dtype=np.uint8)
    for img in (Image.fromarray(rgb), Image.fromarray(rgb[:, :, 0])):
        data = _encode(img, "JPEG", quality=85, subsampling=subsampling, progressive=progressive)
        assert _plain_jpeg_header(data) == (63, 81, 1 if img.mode == "L" else 3)
        decoded = decode_image(data)
        assert decoded.format == "JPEG" and decoded.mode == img.mode
        np.testing.assert_array_equal(decoded.pixels, _decode_with_pillow(data, "x", None).pixels)


def test_jpegs_the_fast_path_leaves_to_pillow():
    from marginface.imaging import _plain_jpeg_header

    img = Image.fromarray(_gradient(200, 200))
    exif = img.getexif()
    exif[0x0112] = 1
    with_exif = _encode(img, "JPEG", exif=exif.tobytes())
    plain = _encode(img, "JPEG", quality=90)
    for data in (with_exif, _encode(img.convert("CMYK"), "JPEG"), plain[:-2], plain[:-500]):
        assert _plain_jpeg_header(data) is None
    # the guard reads the frame header of a plain JPEG too, before any pixel is decoded
    with pytest.raises(ImageError, match="decompression-bomb"):
        read_image(plain, max_pixels=10_000)


def test_source_names_the_image_in_errors():
    with pytest.raises(ImageError, match=r"^train\.rec#7: not an image"):
        decode_image(b"certainly not an image", source="train.rec#7")
    assert decode_image(_encode(Image.fromarray(_gradient()), "PNG"), source="a").source == "a"
