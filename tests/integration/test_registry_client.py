"""The registry client against a small registry double with the native referrers API (none runs here;
Debian's Distribution 2.8 has none): OCI-Subject, filtering, pagination; and a host never contacted."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistryError, RegistrySettings
from scitt_oci.oci.manifest import Descriptor
from tests.serverproc import free_port


class ReferrersRegistry:
    """Distribution-spec 1.1 subset: blobs, manifests by digest or tag, referrers with artifactType filter and paging."""

    def __init__(self, *, page_size: int = 2, filters: bool = True) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.tags: dict[str, str] = {}
        self.page_size = page_size
        self.filters = filters

    def app(self) -> Starlette:
        async def root(request: Request) -> Response:
            return Response("{}", media_type="application/json")

        async def blob(request: Request) -> Response:
            data = self.blobs.get(request.path_params["digest"])
            if data is None:
                return Response(status_code=404)
            return Response(b"" if request.method == "HEAD" else data, headers={"Content-Length": str(len(data))})

        async def upload_start(request: Request) -> Response:
            return Response(
                status_code=202, headers={"Location": f"/v2/{request.path_params['repo']}/blobs/uploads/u1"}
            )

        async def upload_put(request: Request) -> Response:
            data = await request.body()
            digest = request.query_params["digest"]
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
            self.blobs[digest] = data
            return Response(status_code=201)

        async def manifest(request: Request) -> Response:
            ref = request.path_params["ref"]
            if request.method == "PUT":
                data = await request.body()
                digest = mf.digest_of(data)
                self.manifests[digest] = (data, request.headers["content-type"])
                headers = {"Docker-Content-Digest": digest}
                if not ref.startswith("sha256:"):
                    self.tags[ref] = digest
                subject = json.loads(data).get("subject")
                if subject:
                    headers["OCI-Subject"] = subject["digest"]
                return Response(status_code=201, headers=headers)
            digest = self.tags.get(ref, ref)
            if digest not in self.manifests:
                return Response(status_code=404)
            data, media_type = self.manifests[digest]
            return Response(
                b"" if request.method == "HEAD" else data,
                media_type=media_type,
                headers={"Docker-Content-Digest": digest, "Content-Length": str(len(data))},
            )

        async def referrers(request: Request) -> Response:
            subject = request.path_params["digest"]
            wanted = request.query_params.get("artifactType")
            found = []
            for digest, (data, media_type) in sorted(self.manifests.items()):
                doc = json.loads(data)
                if (doc.get("subject") or {}).get("digest") != subject:
                    continue
                kind = doc.get("artifactType") or doc["config"]["mediaType"]
                if self.filters and wanted and kind != wanted:
                    continue
                found.append(
                    {
                        "mediaType": media_type,
                        "digest": digest,
                        "size": len(data),
                        "artifactType": kind,
                        "annotations": doc.get("annotations", {}),
                    }
                )
            start = int(request.query_params.get("page", "0"))
            page = found[start : start + self.page_size]
            headers = {"OCI-Filters-Applied": "artifactType"} if self.filters and wanted else {}
            if start + self.page_size < len(found):
                query = f"page={start + self.page_size}" + (f"&artifactType={quote(wanted, safe='')}" if wanted else "")
                headers["Link"] = f'</v2/{request.path_params["repo"]}/referrers/{subject}?{query}>; rel="next"'
            body = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": page})
            return Response(body, media_type=mf.OCI_INDEX, headers=headers)

        return Starlette(
            routes=[
                Route("/v2/", root),
                Route("/v2/{repo:path}/blobs/uploads/", upload_start, methods=["POST"]),
                Route("/v2/{repo:path}/blobs/uploads/u1", upload_put, methods=["PUT"]),
                Route("/v2/{repo:path}/blobs/{digest}", blob, methods=["GET", "HEAD"]),
                Route("/v2/{repo:path}/manifests/{ref}", manifest, methods=["GET", "HEAD", "PUT"]),
                Route("/v2/{repo:path}/referrers/{digest}", referrers),
            ]
        )


def _serve(app: Starlette) -> tuple[uvicorn.Server, threading.Thread, int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    return server, thread, port


@pytest.fixture(params=[True, False], ids=["filters-applied", "client-filters"])
def double(request: pytest.FixtureRequest) -> Iterator[tuple[ReferrersRegistry, RegistryClient]]:
    registry = ReferrersRegistry(filters=request.param)
    server, thread, port = _serve(registry.app())
    yield registry, RegistryClient(RegistrySettings.for_url(f"http://127.0.0.1:{port}"))
    server.should_exit = True
    thread.join(5)


def _image(client: RegistryClient) -> Descriptor:
    config = client.push_blob("app", b"{}")
    doc = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [],
        }
    )
    digest, subject_header = client.push_manifest("app", doc, mf.OCI_MANIFEST)
    assert subject_header is None
    return Descriptor(mf.OCI_MANIFEST, digest, len(doc))


def test_attach_uses_the_referrers_api_and_pages_through_it(double: tuple[ReferrersRegistry, RegistryClient]) -> None:
    registry, client = double
    image = _image(client)
    for i in range(5):
        ts = f"statement {i}".encode()
        artifact = mf.statement_artifact(image, ts, kind="push", issuer="i", service="s", created=i)
        client.attach("app", image, artifact, [ts])
        client.attach("app", image, artifact, [ts])  # idempotent
    other = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [],
            "subject": image.to_json(),
        }
    )
    client.push_manifest("app", other, mf.OCI_MANIFEST)
    assert client.referrers_api is True
    assert mf.fallback_tag(image.digest) not in registry.tags  # no fallback index when the API exists
    ours = client.referrers("app", image.digest, mf.STATEMENT_ARTIFACT)
    assert len(ours) == 5 and all(d.annotations[mf.ANN_KIND] == "push" for d in ours)
    assert len(client.referrers("app", image.digest)) == 6


def test_digest_of_fetched_bytes_is_checked(double: tuple[ReferrersRegistry, RegistryClient]) -> None:
    registry, client = double
    image = _image(client)
    data, media_type = registry.manifests[image.digest]
    registry.manifests[image.digest] = (data + b" ", media_type)  # the registry now serves other bytes
    with pytest.raises(RegistryError, match="digest is"):
        client.manifest("app", image.digest)


def test_only_the_configured_registry_is_contacted() -> None:
    """A token realm, Location or Link pointing elsewhere is refused, and the other host sees no connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.5)
    evil = f"127.0.0.1:{listener.getsockname()[1]}"

    async def challenge(request: Request) -> Response:
        return Response(
            status_code=401, headers={"WWW-Authenticate": f'Bearer realm="http://{evil}/token",service="x"'}
        )

    async def redirect_upload(request: Request) -> Response:
        return Response(status_code=202, headers={"Location": f"http://{evil}/upload"})

    app = Starlette(
        routes=[
            Route("/v2/{repo:path}/manifests/{ref}", challenge, methods=["GET", "HEAD"]),
            Route("/v2/{repo:path}/blobs/{digest}", lambda r: Response(status_code=404), methods=["HEAD"]),
            Route("/v2/{repo:path}/blobs/uploads/", redirect_upload, methods=["POST"]),
        ]
    )
    server, thread, port = _serve(app)
    try:
        client = RegistryClient(RegistrySettings.for_url(f"http://127.0.0.1:{port}", attempts=2))
        with pytest.raises(RegistryError, match="not an allowed auth host"):
            client.manifest("app", "v1")
        with pytest.raises(RegistryError, match="refusing to contact"):
            client.push_blob("app", b"data")
        with pytest.raises(OSError):
            listener.accept()  # nobody came
    finally:
        server.should_exit = True
        thread.join(5)
        listener.close()


def test_bearer_token_and_basic_auth_flows(tmp_path: object) -> None:
    """A Bearer challenge on the registry's own host gets a token (with the credentials), then the call succeeds;
    a Basic challenge gets the credentials."""
    import base64

    seen: dict[str, str] = {}

    async def token(request: Request) -> Response:
        seen["token_auth"] = request.headers.get("authorization", "")
        seen["scope"] = request.query_params.get("scope", "")
        return Response(json.dumps({"token": "t0k"}), media_type="application/json")

    async def bearer_manifest(request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer t0k":
            realm = f"http://127.0.0.1:{request.url.port}/token"
            return Response(status_code=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="reg"'})
        return Response(status_code=404)

    async def basic_tags(request: Request) -> Response:
        expected = "Basic " + base64.b64encode(b"wabbit:s3cret").decode()
        if request.headers.get("authorization") != expected:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        return Response(json.dumps({"name": "app", "tags": ["v1", "v2"]}), media_type="application/json")

    app = Starlette(
        routes=[
            Route("/token", token),
            Route("/v2/{repo:path}/manifests/{ref}", bearer_manifest),
            Route("/v2/{repo:path}/tags/list", basic_tags),
        ]
    )
    server, thread, port = _serve(app)
    try:
        client = RegistryClient(RegistrySettings(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", "wabbit", "s3cret"))
        assert client.manifest("app", "v1") is None  # authenticated, then an honest 404
        assert seen["scope"] == "repository:app:pull" and seen["token_auth"].startswith("Basic ")
        assert client.tags("app") == ["v1", "v2"]
    finally:
        server.should_exit = True
        thread.join(5)


def test_registry_json_that_is_not_an_object_is_a_registry_error() -> None:
    """A token service or tag list answering a JSON array (or nesting too deep) is named, not an AttributeError."""

    async def token(request: Request) -> Response:
        return Response(b"[1, 2]", media_type="application/json")

    async def manifest(request: Request) -> Response:
        realm = f"http://127.0.0.1:{request.url.port}/token"
        return Response(status_code=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="reg"'})

    async def tags(request: Request) -> Response:
        return Response(b"[" * 100_000, media_type="application/json")

    app = Starlette(
        routes=[
            Route("/token", token),
            Route("/v2/{repo:path}/manifests/{ref}", manifest),
            Route("/v2/{repo:path}/tags/list", tags),
        ]
    )
    server, thread, port = _serve(app)
    try:
        client = RegistryClient(RegistrySettings(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"))
        with pytest.raises(RegistryError, match="must be a JSON object, not list"):
            client.manifest("app", "v1")
        with pytest.raises(RegistryError, match="too deeply"):
            client.tags("app")
    finally:
        server.should_exit = True
        thread.join(5)


def test_docker_config_credentials(tmp_path: object) -> None:
    import base64
    from pathlib import Path

    from scitt_oci.oci.client import docker_credentials

    assert isinstance(tmp_path, Path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"registry.example:5000": {"auth": base64.b64encode(b"u:p:w").decode()}}}))
    assert docker_credentials(path, "registry.example:5000") == ("u", "p:w")
    assert docker_credentials(path, "other.example") is None
    assert docker_credentials(tmp_path / "missing.json", "x") is None


def test_a_fallback_tag_that_is_not_an_index_is_reported(double: tuple[ReferrersRegistry, RegistryClient]) -> None:
    _registry, client = double
    image = _image(client)
    fetched = client.manifest("app", image.digest)
    assert fetched is not None
    client.push_manifest("app", fetched[0], mf.OCI_MANIFEST, mf.fallback_tag(image.digest))  # an image under the tag
    client.referrers_api = False
    with pytest.raises(RegistryError, match="not a referrers index; not trusted"):
        client.referrers("app", image.digest)
