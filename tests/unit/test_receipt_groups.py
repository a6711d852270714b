"""`require.receipts` as groups: all of named services, or k of a named group, beside k distinct services."""

from __future__ import annotations

from pathlib import Path

import pytest

from scitt_oci.cose import keys
from scitt_oci.errors import PolicyError
from scitt_oci.oci.reference import Reference
from scitt_oci.scitt import profile, transparent
from scitt_oci.scitt.statement import SignedStatement
from scitt_oci.verify.image import decide
from scitt_oci.verify.trust import ReceiptGroup, load_policy
from scitt_oci.verify.verifier import verify_transparent_statement
from tests.helpers import MemoryLog, key

IMAGE = "sha256:" + "ab" * 32
SERVICES = ("wabbit", "acme", "acme-dr")


@pytest.fixture
def logs(tmp_path: Path) -> dict[str, MemoryLog]:
    out = {name: MemoryLog(key(slot=10 + i), issuer=f"https://{name}") for i, name in enumerate(SERVICES)}
    for name, log in out.items():
        (tmp_path / f"{name}.cbor").write_bytes(keys.dump_cose_key_set([log.signing_key]))
    (tmp_path / "issuer.pem").write_bytes(key(slot=0).public_pem())
    return out


def _policy(tmp_path: Path, require: str) -> Path:
    services = "".join(f"  - {{name: {n}, keys: [{{path: {n}.cbor}}]}}\n" for n in SERVICES)
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"transparency_services:\n{services}issuers: [{{name: wabbit, keys: [{{path: issuer.pem}}]}}]\n{require}"
    )
    return path


def _statement() -> SignedStatement:
    event = profile.make_event(profile.Kind.PUSH, Reference.parse(f"w.example/app@{IMAGE}"))
    return profile.build(key(slot=0), "https://wabbit.example", event, iat=1)


def _ts(logs: dict[str, MemoryLog], *names: str) -> bytes:
    s = _statement()
    return transparent.add_receipts(s, [logs[n].receipt(logs[n].add(s)) for n in names])


def test_all_of_named_services(logs: dict[str, MemoryLog], tmp_path: Path) -> None:
    policy = load_policy(_policy(tmp_path, "require: {receipts: {all: [wabbit, acme]}}\n"))
    assert policy.requirements.receipt_groups == (ReceiptGroup(("wabbit", "acme"), 2),)
    assert verify_transparent_statement(_ts(logs, "wabbit", "acme"), policy, digest=IMAGE).valid
    # two distinct trusted services, but not the two named
    result = verify_transparent_statement(_ts(logs, "wabbit", "acme-dr"), policy, digest=IMAGE)
    assert result.reason_codes == ["TOO_FEW_RECEIPTS"]
    assert result.findings[0].message == (
        "the policy requires receipts from all of wabbit, acme; verified: wabbit, acme-dr"
    )


def test_k_of_a_group_and_several_groups(logs: dict[str, MemoryLog], tmp_path: Path) -> None:
    doc = "require:\n  receipts: [{all: [wabbit]}, {at_least: 1, of: [acme, acme-dr]}]\n"
    policy = load_policy(_policy(tmp_path, doc))
    assert verify_transparent_statement(_ts(logs, "wabbit", "acme-dr"), policy).valid
    assert verify_transparent_statement(_ts(logs, "wabbit", "acme"), policy).valid
    only_consumer = verify_transparent_statement(_ts(logs, "acme", "acme-dr"), policy)
    assert [f.message for f in only_consumer.findings] == [
        "the policy requires receipts from all of wabbit; verified: acme, acme-dr"
    ]
    assert verify_transparent_statement(_ts(logs, "wabbit"), policy).reason_codes == ["TOO_FEW_RECEIPTS"]


def test_a_rule_s_groups_apply_to_its_images(logs: dict[str, MemoryLog], tmp_path: Path) -> None:
    doc = (
        "require: {receipts: 1}\n"
        "rules:\n  - match: acme.example/imported/*\n    require: {receipts: {at_least: 2, of: [wabbit, acme, acme-dr]}}\n"
    )
    policy = load_policy(_policy(tmp_path, doc))
    one = [_ts(logs, "wabbit")]
    assert decide(Reference.parse(f"acme.example/own/app@{IMAGE}"), one, policy).valid
    imported = decide(Reference.parse(f"acme.example/imported/app@{IMAGE}"), one, policy)
    assert not imported.valid and "at least 2 of wabbit, acme, acme-dr" in imported.summary()
    assert decide(Reference.parse(f"acme.example/imported/app@{IMAGE}"), [_ts(logs, "wabbit", "acme")], policy).valid


@pytest.mark.parametrize(
    ("require", "message"),
    [
        ("{receipts: {all: [wabbit, nobody]}}", "'nobody' is not a transparency service of this policy"),
        ("{receipts: {all: []}}", "one or more distinct transparency services"),
        ("{receipts: {all: [acme, acme]}}", "one or more distinct transparency services"),
        ("{receipts: {at_least: 3, of: [wabbit, acme]}}", "at_least: must be an integer from 1 to the 2 services"),
        ("{receipts: {at_least: 1}}", "missing 'of'"),
        ("{receipts: {all: [acme], of: [wabbit]}}", "unknown key\\(s\\) 'of'"),
        ("{receipts: []}", "an empty list requires nothing"),
        ("{receipts: yes}", "must be an integer from 1 to the number of services \\(3\\)"),
    ],
)
def test_group_errors_name_the_problem(logs: dict[str, MemoryLog], tmp_path: Path, require: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(_policy(tmp_path, f"require: {require}\n"))
