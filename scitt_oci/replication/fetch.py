"""Reading another service's /tlog/ read API over HTTP, with bounded bodies and errors that name the URL."""

from __future__ import annotations

from scitt_oci.errors import FetchError, ScittOciError
from scitt_oci.oci import http
from scitt_oci.tlog import tiles

MAX_CHECKPOINT = 1 << 20
MAX_BUNDLE = tiles.WIDTH * (2 + tiles.MAX_ENTRY)


class TlogClient:
    def __init__(self, base_url: str, *, timeout: float = 15.0, ca_file: str | None = None) -> None:
        base = base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise FetchError(f"source {base_url!r} is not an http(s) URL")
        self.prefix = base if base.endswith("/tlog") else base + "/tlog"
        self.timeout = timeout
        self._session = http.Session(verify=ca_file or True)

    def _get(self, path: str, limit: int) -> bytes | None:
        url = f"{self.prefix}/{path}"
        try:
            r = self._session.get(url, timeout=self.timeout, stream=True)
            if r.status_code == 404:
                return None
            if r.status_code != 200:
                raise FetchError(f"{url} answered HTTP {r.status_code}")
            data = bytearray()
            for chunk in r.iter_content(65536):
                data += chunk
                if len(data) > limit:
                    raise FetchError(f"{url} answered more than {limit} bytes")
            return bytes(data)
        except http.HttpError as exc:
            raise FetchError(f"cannot read {url}: {exc}") from None

    def checkpoint(self) -> bytes:
        data = self._get("checkpoint", MAX_CHECKPOINT)
        if data is None:
            raise FetchError(f"{self.prefix}/checkpoint: the source has no checkpoint yet (404)")
        return data

    def tile(self, level: int, index: int, width: int) -> bytes:
        path = tiles.tile_path(level, index, width)
        data = self._get(path, tiles.FULL_BYTES)
        if data is None and width < tiles.WIDTH:  # the partial tile may be gone once the full one exists
            full = self._get(tiles.tile_path(level, index), tiles.FULL_BYTES)
            data = full[: width * tiles.HASH] if full is not None else None
        if data is None:
            raise FetchError(f"{self.prefix}/{path}: not found")
        if len(data) != width * tiles.HASH:
            raise FetchError(
                f"{self.prefix}/{path}: {len(data)} bytes; a tile of {width} hashes is {width * tiles.HASH}"
            )
        return data

    def bundle(self, index: int, width: int) -> list[bytes]:
        path = tiles.tile_path(tiles.ENTRIES, index, width)
        data = self._get(path, MAX_BUNDLE)
        if data is None and width < tiles.WIDTH:
            data = self._get(tiles.tile_path(tiles.ENTRIES, index), MAX_BUNDLE)
            if data is not None:
                return self._entries(path, data, None)[:width]
        if data is None:
            raise FetchError(f"{self.prefix}/{path}: not found")
        return self._entries(path, data, width)

    def _entries(self, path: str, data: bytes, width: int | None) -> list[bytes]:
        try:
            return tiles.decode_bundle(data, width)
        except ScittOciError as exc:
            raise FetchError(f"{self.prefix}/{path}: {exc}") from None

    def post(self, path: str, body: bytes) -> tuple[int, str, bytes]:
        """POST to a path under the source's base (not /tlog): (status, content type, body)."""
        url = self.prefix[: -len("/tlog")] + path
        try:
            r = self._session.request(
                "POST", url, data=body, headers={"Content-Type": "text/plain"}, timeout=self.timeout
            )
            return r.status_code, r.headers.get("content-type", ""), r.content
        except http.HttpError as exc:
            raise FetchError(f"cannot reach {url}: {exc}") from None
