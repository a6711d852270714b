"""An OCI image layout directory (image-spec `image-layout.md`, what skopeo and oras write) as an `ImageStore`.

Blobs live in `blobs/<alg>/<hex>`; `index.json` lists what the layout holds: tagged images
(`org.opencontainers.image.ref.name`) and, untagged, each referrer manifest (so a reader finds an
image's signatures and statements by their `subject`). A tag-schema index tagged `sha256-<hex>`
(as a `skopeo copy` of a registry's fallback index leaves it) is read too. Writes are atomic
(write, fsync, rename); one writer at a time.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from scitt_oci import files, jsonin
from scitt_oci.errors import LayoutError as LayoutError  # defined there since #12; kept importable here
from scitt_oci.errors import MalformedError
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.reference import Digest
from scitt_oci.promote.store import MAX_COPY_BLOB_BYTES, ImageStore

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = '{"imageLayoutVersion":"1.0.0"}'


class LayoutStore:
    """An `ImageStore` over an OCI image layout directory (its `repository` is the directory)."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = root
        self.repository = str(root)
        self.name = f"oci:{root}"
        self._subjects: dict[str, str | None] = {}  # manifest digest -> its subject digest (cache)
        if not (root / "oci-layout").is_file():
            if not create:
                raise LayoutError(f"{root} is not an OCI image layout (no oci-layout file)")
            (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            _write_atomic(root / "oci-layout", LAYOUT_FILE.encode())
            _write_atomic(root / "index.json", mf.canonical_json(_empty()))

    # ----- files -----
    def _blob_path(self, digest: str) -> Path:
        d = Digest.parse(digest)
        return self.root / "blobs" / d.algorithm / d.hex

    def _index(self) -> dict[str, Any]:
        data = _read_regular(self.root / "index.json", mf.MAX_MANIFEST_BYTES)
        if data is None:
            raise LayoutError(f"{self.root}/index.json: No such file or directory")
        doc = jsonin.load_object(data, f"{self.root}/index.json", mf.MAX_MANIFEST_BYTES)
        if not isinstance(doc.get("manifests", []), list):
            raise LayoutError(f"{self.root}/index.json: manifests must be a list")
        return doc

    def _entries(self) -> list[Descriptor]:
        return list(mf.parse(mf.canonical_json(self._index()), mf.OCI_INDEX).manifests)

    def _save(self, doc: dict[str, Any]) -> None:
        _write_atomic(self.root / "index.json", mf.canonical_json(doc))

    def _read(self, digest: str, limit: int) -> bytes | None:
        path = self._blob_path(digest)
        data = _read_regular(path, limit)
        if data is None:
            return None
        if mf.digest_of(data) != digest:
            raise LayoutError(f"{path}: the file's content does not match its digest")
        return data

    # ----- reading -----
    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        digest = reference if reference.startswith(("sha256:", "sha512:")) else self.tag_digest(reference)
        if digest is None:
            return None
        data = self._read(digest, mf.MAX_MANIFEST_BYTES)
        if data is None:
            return None
        try:
            media_type = mf.parse(data).media_type
        except MalformedError as exc:
            raise LayoutError(f"{self.name}@{digest}: {exc}") from None
        return data, media_type, digest

    def blob(self, repo: str, digest: str, limit: int = MAX_COPY_BLOB_BYTES) -> bytes | None:
        return self._read(digest, limit)

    def _subject_of(self, digest: str) -> str | None:
        if digest not in self._subjects:
            fetched = self.manifest(self.repository, digest)
            subject = mf.parse(fetched[0], fetched[1]).subject if fetched else None
            self._subjects[digest] = subject.digest if subject else None
        return self._subjects[digest]

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        out: dict[str, Descriptor] = {}
        entries = self._entries()
        for d in entries:
            if d.annotations.get(REF_NAME) == mf.fallback_tag(digest):
                fetched = self.manifest(repo, d.digest)
                if fetched is not None:
                    for listed in mf.parse(fetched[0], fetched[1]).manifests:
                        out.setdefault(listed.digest, listed)
            elif d.media_type == mf.OCI_MANIFEST and self._subject_of(d.digest) == digest:
                out.setdefault(d.digest, d)
        return [d for d in out.values() if artifact_type is None or d.artifact_type == artifact_type]

    def has_blob(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def has_manifest(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def tag_digest(self, tag: str) -> str | None:
        for d in self._entries():
            if d.annotations.get(REF_NAME) == tag:
                return d.digest
        return None

    # ----- writing -----
    def put_blob(self, data: bytes) -> None:
        path = self._blob_path(mf.digest_of(data))
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, data)

    def mount(self, digest: str, source: ImageStore) -> bool:
        return False  # a layout holds its own copy of every blob

    def _list(self, entry: Descriptor, *, replace_tag: str | None = None) -> None:
        doc = self._index()
        kept = [
            m
            for m in doc.get("manifests", [])
            if not (
                isinstance(m, dict)
                and replace_tag is not None
                and (m.get("annotations") or {}).get(REF_NAME) == replace_tag
            )
        ]
        if any(
            isinstance(m, dict) and m.get("digest") == entry.digest and m.get("annotations", {}) == entry.annotations
            for m in kept
        ):
            return
        doc["manifests"] = [*kept, entry.to_json()]
        self._save(doc)

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> None:
        self.put_blob(data)
        if tag is not None:
            self._list(
                Descriptor(media_type, mf.digest_of(data), len(data), annotations={REF_NAME: tag}), replace_tag=tag
            )

    def keep(self, image: Descriptor) -> None:
        """List an untagged image in index.json, so that the layout holds it (and tools find it)."""
        if not any(d.digest == image.digest for d in self._entries()):
            self._list(Descriptor(image.media_type, image.digest, image.size))

    def put_referrer(self, subject: Descriptor, data: bytes, media_type: str) -> None:
        self.put_blob(data)
        parsed = mf.parse(data, media_type)
        digest = mf.digest_of(data)
        self._subjects[digest] = subject.digest
        self._list(Descriptor(media_type, digest, len(data), parsed.effective_artifact_type, parsed.annotations))


def _empty() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": []}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        os.chmod(path, 0o644)  # mkstemp made it 0600; layouts are read by other tools


def _read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of the regular file at `path`, at most `limit` (None when absent). A layout may come from
    anyone (a USB stick across an air gap): a FIFO, a device or an endless file is refused, not read."""
    try:
        return files.read_regular(path, limit)
    except FileNotFoundError:
        return None
    except files.UnreadableFile as exc:
        raise LayoutError(f"{path}: {exc}") from None
