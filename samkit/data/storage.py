"""Folders of batch jobs on the local file system or in object storage (``s3://``, ``gs://``...).

A batch job names its input and output folders by path or URI. :func:`open_folder` returns a
:class:`LocalFolder` for a path (or ``file://`` URI) and an :class:`ObjectFolder` for any other
URI that ``pyarrow.fs.FileSystem.from_uri`` understands (the file systems Ray Data reads and
writes through: S3 and S3-compatible stores, GCS, HDFS). Both list images in the same sorted
order, read them as the same RGB arrays and write a result file whole or not at all: locally a
temporary file renamed into place (:func:`samkit.safeio.write_atomic`, no writes through links),
in object storage one upload, which the store makes visible only once complete.

An :class:`ObjectFolder` pickles as its URI: a Ray worker opens the file system itself, with
the credentials of its own environment (``AWS_ACCESS_KEY_ID``..., an instance role) or those
of the URI (``s3://bucket/prefix?region=eu-west-1&endpoint_override=host:port&scheme=http``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import DependencyError, ImageError, OutputError, SamkitError
from ..safeio import write_atomic
from .files import list_images, read_image
from .sources import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, MAX_URL_BYTES, _open_pil, pil_to_rgb

__all__ = ["LocalFolder", "ObjectFolder", "is_uri", "open_folder"]


def is_uri(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URI with a scheme (``s3://b/p``), not a local path."""
    s = os.fspath(location)
    head, sep, _ = s.partition("://")
    return bool(sep) and head.isascii() and head.replace("+", "").isalnum() and len(head) > 1


def open_folder(location: str | os.PathLike) -> LocalFolder | ObjectFolder:
    """The folder at a local path, a ``file://`` URI, or an object storage URI."""
    s = os.fspath(location)
    if not is_uri(s):
        return LocalFolder(Path(s).expanduser())
    if s.lower().startswith("file://"):
        return LocalFolder(Path(s[len("file://") :]))
    return ObjectFolder(s)


class LocalFolder:
    """A folder on a file system this process (and every Ray node) sees at ``path``."""

    is_local = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp_dir: Path | None = None  # where write() stages files (default: next to them)

    def __repr__(self) -> str:
        return f"LocalFolder({str(self.path)!r})"

    def where(self, rel: PurePosixPath | str = "") -> str:
        """The path of ``rel`` for messages."""
        return str(self.path / rel) if str(rel) else str(self.path)

    def list_images(self, recursive: bool, exclude: Any = None) -> list[PurePosixPath]:
        """Image files below the folder, relative and sorted (see :func:`list_images`);
        ``exclude``: an output folder inside this one, left out."""
        skip = exclude.path if isinstance(exclude, LocalFolder) else None
        return list_images(self.path, recursive=recursive, exclude=skip)[1]

    def read_image(self, rel: PurePosixPath) -> np.ndarray:
        """``H x W x 3`` RGB uint8 (:func:`samkit.data.files.read_image`)."""
        return read_image(self.path / rel)

    def exists(self, rel: PurePosixPath) -> bool:
        return (self.path / rel).is_file()

    def existing(self, suffix: str) -> set[str]:
        """Relative POSIX paths of the files ending in ``suffix`` below the folder (hidden
        files and folders left out): one listing instead of a look-up per image."""
        found: set[str] = set()
        if not self.path.is_dir():
            return found
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            here = Path(dirpath).relative_to(self.path)
            for name in filenames:
                if name.endswith(suffix) and not name.startswith("."):
                    found.add((PurePosixPath(here.as_posix()) / name).as_posix())
        return found

    def write(self, rel: PurePosixPath, data: bytes) -> None:
        """Write ``data`` to ``rel`` atomically, never outside the folder or through a link."""
        write_atomic(self.path / rel, data, root=self.path, tmp_dir=self.tmp_dir)


class ObjectFolder:
    """A prefix in object storage (or any ``pyarrow.fs`` file system) named by a URI."""

    is_local = False

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.scheme = uri.partition("://")[0].lower()
        self._fs: Any = None
        self._base = ""
        self.filesystem()  # a bad URI or a missing pyarrow fails here, on the driver

    def __getstate__(self) -> dict:
        return {"uri": self.uri}  # a worker opens the file system itself

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"])

    def __repr__(self) -> str:
        return f"ObjectFolder({self.where()!r})"

    def filesystem(self) -> Any:
        """``(pyarrow FileSystem, base path inside it)``."""
        if self._fs is None:
            try:
                from pyarrow import fs
            except ImportError as exc:
                raise DependencyError(
                    f'{self.scheme}:// folders need pyarrow: pip install "samkit[ray]" (or pyarrow)'
                ) from exc
            try:
                self._fs, base = _from_uri(fs, self.uri, self.scheme)
            except Exception as exc:  # ArrowInvalid, OSError...: an unknown scheme or bad URI
                raise SamkitError(
                    f"cannot open {self.where()}: {type(exc).__name__}: {exc} (give a local path "
                    "or a URI pyarrow reads: s3://bucket/prefix, gs://bucket/prefix, ...)"
                ) from None
            self._base = base.rstrip("/")
        return self._fs

    def where(self, rel: PurePosixPath | str = "") -> str:
        """``scheme://bucket/prefix/rel`` for messages (no credentials, no query)."""
        base = self._base or self.uri.partition("://")[2].split("?")[0].split("@")[-1]
        base = base.rstrip("/")
        return f"{self.scheme}://{base}/{rel}" if str(rel) else f"{self.scheme}://{base}"

    def _path(self, rel: PurePosixPath | str) -> str:
        self.filesystem()
        return f"{self._base}/{rel}"

    def list_images(self, recursive: bool, exclude: Any = None) -> list[PurePosixPath]:
        """Image objects below the prefix (hidden names and ``exclude``'s prefix left out),
        relative and sorted by their POSIX string."""
        from pyarrow import fs

        fsys = self.filesystem()
        skip = None
        if isinstance(exclude, ObjectFolder) and exclude.filesystem().type_name == fsys.type_name:
            skip = exclude._base + "/"
        try:
            infos = fsys.get_file_info(fs.FileSelector(self._base, recursive=recursive))
        except FileNotFoundError:
            raise ImageError(f"data not found: {self.where()} (give a folder of images)") from None
        except OSError as exc:
            raise ImageError(f"cannot list {self.where()}: {exc}") from None
        found = []
        for info in infos:
            if info.type != fs.FileType.File or (skip and (info.path + "/").startswith(skip)):
                continue
            rel = PurePosixPath(info.path[len(self._base) + 1 :])
            if any(p.startswith(".") for p in rel.parts):
                continue
            if rel.suffix.lower() in IMAGE_SUFFIXES:
                found.append(rel)
        found.sort(key=lambda p: p.as_posix())
        return found

    def read_image(self, rel: PurePosixPath) -> np.ndarray:
        """``H x W x 3`` RGB uint8, decoded as a local file is (EXIF, modes, pixel limit)."""
        name = self.where(rel)
        fsys = self.filesystem()
        try:
            size = fsys.get_file_info(self._path(rel)).size
            if size is not None and size > MAX_URL_BYTES:
                raise ImageError(f"{name}: {size} bytes is over the {MAX_URL_BYTES}-byte limit")
            with fsys.open_input_file(self._path(rel)) as f:
                data = f.read()
        except FileNotFoundError:
            raise ImageError(f"no such image file: {name}") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot be read ({exc})") from None
        return pil_to_rgb(_open_pil(io.BytesIO(data), name, DEFAULT_MAX_PIXELS), name, None)

    def exists(self, rel: PurePosixPath) -> bool:
        from pyarrow import fs

        return self.filesystem().get_file_info(self._path(rel)).type == fs.FileType.File

    def existing(self, suffix: str) -> set[str]:
        """Relative paths of the objects ending in ``suffix`` below the prefix (one listing)."""
        from pyarrow import fs

        fsys = self.filesystem()
        try:
            infos = fsys.get_file_info(
                fs.FileSelector(self._base, recursive=True, allow_not_found=True)
            )
        except OSError as exc:
            raise OutputError(f"cannot list {self.where()}: {exc}") from None
        n = len(self._base) + 1
        return {i.path[n:] for i in infos if i.type == fs.FileType.File and i.path.endswith(suffix)}

    def write(self, rel: PurePosixPath, data: bytes) -> None:
        """Upload ``data`` as ``rel`` in one piece (the object appears when complete)."""
        if ".." in PurePosixPath(rel).parts or PurePosixPath(rel).is_absolute():
            raise OutputError(f"{rel} is not inside {self.where()}")
        try:
            with self.filesystem().open_output_stream(self._path(rel)) as f:
                f.write(data)
        except OSError as exc:
            raise OutputError(f"cannot write {self.where(rel)}: {exc}") from None


def _from_uri(fs: Any, uri: str, scheme: str) -> tuple[Any, str]:
    """``pyarrow.fs.FileSystem.from_uri``; S3 with ``allow_delayed_open`` unless the URI sets
    it: a result smaller than a part is then one ``PutObject`` instead of a three-request
    multipart upload (which some S3-compatible servers, e.g. moto, fail to complete)."""
    if scheme == "s3" and "allow_delayed_open" not in uri:
        try:
            return fs.FileSystem.from_uri(
                uri + ("&" if "?" in uri else "?") + "allow_delayed_open=true"
            )
        except Exception:  # an older pyarrow without the option: the URI as given
            pass
    return fs.FileSystem.from_uri(uri)
