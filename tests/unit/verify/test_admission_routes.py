"""Admission's HTTP face in process (Starlette's TestClient): authentication, bodies, statuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from scitt_oci.server.admission import Admission, ClientAuth, admission_app, admission_routes
from scitt_oci.verify import admission as adm
from tests.unit.verify.test_admission_service import pod, provider
from tests.unit.verify.world import HOST, World

JSON = {"content-type": "application/json"}


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World.make(tmp_path)


def app(world: World, auth: ClientAuth | None = None) -> TestClient:
    controller = Admission(world.policy_path, {HOST: world.registry}, registry=CollectorRegistry())
    return TestClient(admission_app(admission_routes(controller, auth)))


def test_reviews_are_answered_with_the_service_decision(world: World) -> None:
    ref = world.recorded_image()
    client = app(world)
    r = client.post("/admission/validate", content=pod(str(ref)), headers=JSON)
    assert r.status_code == 200 and r.json()["response"]["allowed"] is True
    r = client.post("/admission/mutate", content=pod(f"{HOST}/acme/app:v1"), headers=JSON)
    assert r.status_code == 200 and r.json()["response"]["patchType"] == "JSONPatch"
    r = client.post("/gatekeeper/verify", content=provider(str(ref)), headers=JSON)
    assert r.status_code == 200 and r.json()["response"]["items"][0]["value"]["valid"] is True
    assert client.get("/healthz").text == "ok\n"


def test_bad_requests_get_a_precise_4xx(world: World) -> None:
    client = app(world)
    r = client.post("/admission/validate", content=b'{"kind": "Nope"}', headers=JSON)
    assert r.status_code == 400 and "AdmissionReview" in r.json()["detail"]
    r = client.post("/admission/validate", content=pod(), headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/admission/validate", content=b" " * (adm.MAX_REVIEW_BYTES + 1), headers=JSON)
    assert r.status_code == 413
    r = client.post("/gatekeeper/verify", content=b"[]", headers=JSON)
    assert r.status_code == 400 and "ProviderRequest" in r.json()["response"]["systemError"]
    r = client.get("/admission/other")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


def test_a_client_that_does_not_authenticate_is_refused_before_its_body_is_read(world: World) -> None:
    ref = world.recorded_image()
    client = app(world, ClientAuth(tokens=("s3cret",)))
    r = client.post("/admission/validate", content=pod(str(ref)), headers=JSON)
    assert r.status_code == 401
    r = client.post("/admission/validate", content=pod(str(ref)), headers={**JSON, "authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = client.post("/gatekeeper/verify", content=provider(str(ref)), headers=JSON)
    assert r.status_code == 401
    ok = client.post("/admission/validate", content=pod(str(ref)), headers={**JSON, "authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["response"]["allowed"] is True


def _reshaped(body: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(body)
    change(doc["request"])
    return json.dumps(doc).encode()


def _set_image(request: dict[str, Any]) -> None:
    request["object"]["spec"]["containers"][0]["image"] = 5


def _null_object(request: dict[str, Any]) -> None:
    request["object"] = None


def _string_spec(request: dict[str, Any]) -> None:
    request["object"]["spec"] = "containers"


def _string_container(request: dict[str, Any]) -> None:
    request["object"]["spec"]["containers"] = ["r.example/app:v1"]


def _no_kind(request: dict[str, Any]) -> None:
    del request["kind"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_set_image, "request.object/spec/containers/0/image must be an image string, not a number"),
        (_null_object, "request.object must be an object, not null"),
        (_string_spec, "request.object/spec must be an object, not a string"),
        (_string_container, "request.object/spec/containers/0 must be an object, not a string"),
        (_no_kind, "request.kind.kind must be a string, not null"),
    ],
)
@pytest.mark.parametrize("route", ["validate", "mutate"])
def test_an_authenticated_review_of_the_wrong_shape_is_a_400_naming_the_field(
    world: World, route: str, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    """An image that is no string, or an object that is null, was read as no image and admitted."""
    ref = world.recorded_image()
    client = app(world, ClientAuth(tokens=("s3cret",)))
    headers = {**JSON, "authorization": "Bearer s3cret"}
    r = client.post(f"/admission/{route}", content=_reshaped(pod(str(ref)), change), headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == f"not an AdmissionReview: {field}"


def test_a_delete_may_have_no_object_and_has_no_images(world: World) -> None:
    client = app(world)

    def deleting(request: dict[str, Any]) -> None:
        request["object"], request["operation"] = None, "DELETE"

    r = client.post("/admission/validate", content=_reshaped(pod("ignored"), deleting), headers=JSON)
    assert r.status_code == 200 and r.json()["response"]["allowed"] is True


def test_a_provider_key_that_is_no_string_is_a_400_naming_it(world: World) -> None:
    ref = world.recorded_image()
    client = app(world)
    body = json.loads(provider(str(ref), "x"))
    body["request"]["keys"][1] = 5
    r = client.post("/gatekeeper/verify", content=json.dumps(body).encode(), headers=JSON)
    assert r.status_code == 400
    assert r.json()["response"]["systemError"] == (
        "not a ProviderRequest: request.keys[1] must be an image string, not a number"
    )
