"""Image sources (samkit.data.sources): every source type, format conversions, and bad files."""

from __future__ import annotations

import http.server
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from samkit.data.sources import array_to_rgb, is_single_source, load_image, load_sources
from samkit.errors import ImageError

from ..conftest import synthetic_image

RGB = synthetic_image(48, 64, seed=3)


def _save(path: Path, rgb: np.ndarray = RGB) -> Path:
    Image.fromarray(rgb).save(path)
    return path


def _items(source, **kw):
    return list(load_sources(source, **kw))


def test_path_str_and_pathlib(tmp_path):
    p = _save(tmp_path / "a.png")
    for src in (str(p), p):
        (item,) = _items(src)
        assert item.ok and item.path == str(p) and item.frame is None
        np.testing.assert_array_equal(item.image, RGB)
    assert is_single_source(p)


def test_directory_sorted_and_filtered(tmp_path):
    _save(tmp_path / "b.png", RGB[::-1].copy())
    _save(tmp_path / "a.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    items = _items(tmp_path)
    assert [Path(i.path).name for i in items] == ["a.jpg", "b.png"]
    assert [i.index for i in items] == [0, 1]
    np.testing.assert_array_equal(items[1].image, RGB[::-1])
    assert not is_single_source(tmp_path)


def test_glob_pattern(tmp_path):
    for name in ("x1.png", "x2.png", "y.png"):
        _save(tmp_path / name)
    items = _items(str(tmp_path / "x*.png"))
    assert [Path(i.path).name for i in items] == ["x1.png", "x2.png"]


def test_list_of_mixed_sources(tmp_path):
    p = _save(tmp_path / "a.png")
    pil = Image.fromarray(RGB)
    bgr = np.ascontiguousarray(RGB[..., ::-1])
    items = _items([str(p), bgr, pil, RGB], image_format="BGR")
    assert [i.path for i in items] == [str(p), "image1", "image2", "image3"]
    for item in items[:3]:
        np.testing.assert_array_equal(item.image, RGB)
    np.testing.assert_array_equal(items[3].image, RGB[..., ::-1])  # an RGB array read as BGR


def test_numpy_image_format_and_batch_array():
    (item,) = _items(RGB, image_format="RGB")
    np.testing.assert_array_equal(item.image, RGB)
    items = _items(np.stack([RGB, RGB[::-1]]), image_format="RGB")
    assert len(items) == 2 and not is_single_source(np.stack([RGB, RGB]))
    np.testing.assert_array_equal(items[1].image, RGB[::-1])


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((4, 5), 77, np.uint8), 77),
        (np.full((4, 5, 1), 9, np.uint8), 9),
        (np.full((4, 5), 257 * 200, np.uint16), 200),
        (np.full((4, 5, 3), 65535, np.uint16), 255),
        (np.full((4, 5), 0.5, np.float32), 128),
        (np.ones((4, 5), bool), 255),
    ],
)
def test_array_conversions(array, expected):
    rgb = array_to_rgb(array, "RGB")
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert np.all(rgb == expected)


def test_rgba_array_drops_alpha_and_respects_order():
    bgra = np.zeros((3, 3, 4), np.uint8)
    bgra[..., 0] = 255  # blue in BGR order
    bgra[..., 3] = 10
    rgb = array_to_rgb(bgra, "BGR")
    assert rgb[0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 5, 2), np.uint8), "must be H x W, H x W x 3 or H x W x 4"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.full((4, 5, 3), 2.0), "float pixel values must lie in [0, 1]"),
        (np.full((4, 5, 3), np.nan), "NaN or inf"),
        (np.zeros((4, 5, 3), np.complex64), "unsupported image dtype"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(ImageError, match=None) as exc:
        load_image(array)
    assert message in str(exc.value)


def test_pil_modes(tmp_path):
    gray = Image.fromarray(np.full((6, 7), 50, np.uint8))  # L
    assert load_image(gray).tolist() == np.full((6, 7, 3), 50).tolist()
    rgba = Image.fromarray(np.dstack([RGB, np.full(RGB.shape[:2], 3, np.uint8)]), "RGBA")
    np.testing.assert_array_equal(load_image(rgba), RGB)
    pal = Image.fromarray(RGB).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    out = load_image(pal)
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGBA").convert("RGB")))
    cmyk = Image.fromarray(RGB).convert("CMYK")
    assert load_image(cmyk).shape == RGB.shape


def test_16bit_png_file(tmp_path):
    values = (np.arange(48 * 64).reshape(48, 64) % 256).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values * 257).save(path)  # 16-bit grayscale PNG
    rgb = _items(path)[0].image
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(rgb[..., 1], values)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(RGB)  # 64 wide, 48 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (64, 48, 3)
    expected = np.asarray(Image.open(path).transpose(Image.ROTATE_270))
    np.testing.assert_array_equal(out, expected)


def test_video_frames_with_stride(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("OpenCV has no MJPG writer here")
    for k in range(7):
        writer.write(np.full((48, 64, 3), (k * 30, 0, 255 - k * 30), np.uint8))  # BGR
    writer.release()
    items = _items(path, vid_stride=3)
    assert [i.frame for i in items] == [0, 3, 6]
    assert [i.index for i in items] == [0, 1, 2]
    for item in items:  # converted to RGB: red channel = 255 - 30 k, blue = 30 k
        k = item.frame
        assert abs(int(item.image[..., 0].mean()) - (255 - k * 30)) <= 4
        assert abs(int(item.image[..., 2].mean()) - k * 30) <= 4


def test_unopenable_video_raises_alone_and_is_skipped_in_a_list(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ImageError, match="broken.mp4"):
        _items(bad)
    items = _items([bad, _save(tmp_path / "ok.png")])
    assert not items[0].ok and "broken.mp4" in items[0].error
    assert items[1].ok


@pytest.fixture
def http_dir(tmp_path):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_source(http_dir):
    root, base = http_dir
    _save(root / "remote.png")
    (item,) = _items(f"{base}/remote.png")
    np.testing.assert_array_equal(item.image, RGB)
    with pytest.raises(ImageError, match="HTTP error 404"):
        _items(f"{base}/missing.png")


def test_corrupt_file_in_a_folder_is_reported_and_skipped(tmp_path):
    _save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not really a png")
    good = _save(tmp_path / "c.jpg")
    truncated = tmp_path / "d.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    items = _items(tmp_path)
    assert [i.ok for i in items] == [True, False, True, False]
    assert "b.png" in items[1].error and "not an image file" in items[1].error
    assert "d.jpg" in items[3].error and "corrupt or truncated" in items[3].error
    with pytest.raises(ImageError, match="b.png"):
        _items(tmp_path, strict=True)


def _png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_decompression_bomb_limit(tmp_path):
    small = _save(tmp_path / "small.png")
    with pytest.raises(ImageError, match="decompression-bomb limit"):
        load_image(small, max_pixels=1000)
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 40_000, 40_000)  # 1.6 Gpx claimed by a 50-byte file
    with pytest.raises(ImageError, match="decompression"):
        load_image(bomb)
    items = _items([bomb, small])
    assert not items[0].ok and "bomb.png" in items[0].error and items[1].ok


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("does/not/exist.png", "no such file or directory"),
        ("nothing_here_*.png", "matches no files"),
        (12345, "unsupported image source of type int"),
        ([], "empty list"),
    ],
)
def test_single_source_errors(source, message):
    with pytest.raises(ImageError) as exc:
        _items(source)
    assert message in str(exc.value)


def test_empty_directory_and_bad_options(tmp_path):
    with pytest.raises(ImageError, match="no image or video files"):
        _items(tmp_path)
    with pytest.raises(ImageError, match="vid_stride"):
        _items(RGB, vid_stride=0)
    with pytest.raises(ImageError, match="image_format"):
        _items(RGB, image_format="HSV")


def test_arrays_are_copied():
    src = RGB.copy()
    out = load_image(src, "RGB")
    src[:] = 0
    np.testing.assert_array_equal(out, RGB)
