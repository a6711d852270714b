"""Admission's HTTP face in process (Starlette's TestClient): authentication, bodies, statuses."""

from __future__ import annotations

from pathlib import Path

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
