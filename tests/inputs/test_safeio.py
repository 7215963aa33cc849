"""The guarded I/O helpers: safe names, no-follow output folders, atomic writes, body limits,
stale download parts."""

from __future__ import annotations

import errno
import io
import os
from unittest import mock

import pytest

from samkit.data.safeio import (
    Deadline,
    read_body,
    safe_name,
    safe_subdir,
    same_file,
    shorten_component,
    write_atomic,
)
from samkit.errors import OutputError
from samkit.zoo.download import clean_stale_parts


def test_safe_name_is_short_safe_and_keeps_long_names_apart():
    a, b = "é" * 200 + "a", "é" * 200 + "b"
    na, nb = safe_name(a, ".png"), safe_name(b, ".png")
    assert na != nb and len(na.encode()) <= 180 and na.endswith(".png")
    assert set(na[:-4]) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-.")
    assert safe_name("../../etc/passwd") == "_.._etc_passwd"  # no separator, no leading dot
    assert safe_name("photo 1") == "photo_1" and safe_name("") == "image"


def test_shorten_component_only_when_too_long():
    assert shorten_component("a.json") == "a.json"
    long = "x" * 300 + ".json"
    short = shorten_component(long)
    assert len(short.encode()) <= 240 and short != shorten_component("y" * 300 + ".json")


def test_safe_subdir_refuses_links_below_the_root(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    root = tmp_path / "out"
    root.mkdir()
    (root / "masks").symlink_to(victim, target_is_directory=True)
    with pytest.raises(OutputError, match="symbolic link"):
        safe_subdir(root, "masks")
    with pytest.raises(OutputError, match="symbolic link"):
        write_atomic(root / "masks" / "a.png", b"x", root=root)
    assert list(victim.iterdir()) == []
    linked_root = tmp_path / "chosen"
    linked_root.symlink_to(victim, target_is_directory=True)  # the user's own choice: allowed
    assert safe_subdir(linked_root, "sub").is_dir() and (victim / "sub").is_dir()


def test_write_atomic_names_the_path_on_a_full_disk(tmp_path):
    target = tmp_path / ("n" * 250 + ".png")  # a long name: the temporary name must stay short
    write_atomic(target, b"ok")
    assert target.read_bytes() == b"ok"
    full = OSError(errno.ENOSPC, "No space left on device")
    with (
        mock.patch("os.fsync", side_effect=full),
        pytest.raises(OutputError, match="No space left") as info,
    ):
        write_atomic(target, b"new")
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"ok" and sorted(os.listdir(tmp_path)) == [target.name]


def test_same_file_sees_through_links(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    assert same_file(tmp_path / "b.json", tmp_path / "a.json")
    assert same_file(tmp_path / "." / "a.json", tmp_path / "a.json")
    assert not same_file(tmp_path / "a.json", tmp_path / "c.json")


class _Slow(io.BytesIO):
    headers: dict = {}

    def read1(self, n):
        import time

        time.sleep(0.05)
        return super().read1(1)


def test_read_body_enforces_cap_and_deadline():
    assert read_body(_Slow(b"abc"), 10, Deadline(5)) == b"abc"
    with pytest.raises(ValueError, match="limit"):
        read_body(_Slow(b"x" * 20), 10, Deadline(5))
    with pytest.raises(TimeoutError, match="overall limit"):
        read_body(_Slow(b"x" * 100), 1000, Deadline(0.2))


def test_clean_stale_parts_spares_a_live_download(tmp_path):
    import fcntl

    dest = tmp_path / "sam_b.pt"
    stale = tmp_path / "sam_b.pt.part-00000000"
    live = tmp_path / "sam_b.pt.part-11111111"
    other = tmp_path / "mobile_sam.pt.part-22222222"
    for p in (stale, live, other):
        p.write_bytes(b"x")
    fd = os.open(live, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert clean_stale_parts(dest) == [stale]
    finally:
        os.close(fd)
    assert live.exists() and other.exists() and not stale.exists()
