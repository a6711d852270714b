"""Registration policy rules and configuration loading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import BaseModel

from scitt_oci import config
from scitt_oci.cose import headers, keys, sign1
from scitt_oci.errors import ConfigError
from scitt_oci.log.policy import RegistrationPolicy, Rejection
from scitt_oci.scitt import statement
from tests.helpers import key


def _stmt(
    k: keys.CoseKey, iss: str = "https://wabbit.example", sub: str = "oci://r.example/app@sha256:" + "a" * 64
) -> bytes:
    return statement.hash_envelope_statement(k, issuer=iss, subject=sub, digest=hashlib.sha256(b"x").digest()).encode()


def test_trusted_issuer_key_passes_and_the_unprotected_header_is_emptied() -> None:
    policy = RegistrationPolicy.build(issuer_keys=[key()])
    signed = statement.parse(_stmt(key()))
    with_extra = signed.message.with_unprotected({headers.RECEIPTS: [b"old receipt"]}).encode()
    checked = policy.check(with_extra)
    assert checked.message.unprotected == {} and checked.entry() == signed.entry()


@pytest.mark.parametrize(
    ("policy_kw", "body_kw", "title", "detail"),
    [
        ({"algorithm_names": ["ES384"]}, {}, "Bad Signature Algorithm", "ES256 is not accepted here"),
        ({"issuers": ["https://acme.*"]}, {}, "Rejected", "issuer 'https://wabbit.example' is not allowed"),
        ({"subjects": ["oci://other.example/*"]}, {}, "Rejected", "matches none of the allowed subject patterns"),
        ({"max_statement_bytes": 100}, {}, "Payload Too Large", "this log accepts at most 100"),
        ({}, {"slot": 3}, "Rejected", "not trusted by this log"),
    ],
)
def test_policy_rejections(policy_kw: dict[str, object], body_kw: dict[str, int], title: str, detail: str) -> None:
    policy = RegistrationPolicy.build(issuer_keys=[key()], **policy_kw)  # type: ignore[arg-type]  # each case sets one keyword, of that keyword's type
    with pytest.raises(Rejection, match=detail) as info:
        policy.check(_stmt(key(slot=body_kw.get("slot", 0))))
    assert info.value.title == title


def test_subject_globs_allow_matching_subjects() -> None:
    policy = RegistrationPolicy.build(issuer_keys=[key()], subjects=["oci://r.example/*"], issuers=["https://wabbit.*"])
    assert policy.check(_stmt(key())).subject is not None


def test_open_registration_needs_a_self_contained_signature() -> None:
    policy = RegistrationPolicy.build(open_registration=True)
    with pytest.raises(Rejection, match="not trusted"):
        policy.check(_stmt(key(slot=5)))  # kid only: nothing to verify it with
    forged = sign1.sign(key(), {4: key().kid, 15: {1: "https://x", 2: "s"}}, b"p")
    bad = sign1.Sign1(forged.protected_bytes, forged.protected, {}, b"q", forged.signature).encode()
    with pytest.raises(Rejection, match="not trusted|does not verify"):
        RegistrationPolicy.build(issuer_keys=[key()]).check(bad)


def test_config_layers_and_errors(tmp_path: Path) -> None:
    file = tmp_path / "scitt.yaml"
    file.write_text("listen: 127.0.0.1:9100\nbatch: {max_size: 10}\nregistration: {issuer_keys: [keys/a.pem]}\n")
    cfg = config.load(file, environ={"SCITT_OCI_BATCH__MAX_SIZE": "20"}, overrides={"listen": "127.0.0.1:9200"})
    assert cfg.batch.max_size == 20 and cfg.listen == "127.0.0.1:9200"
    assert cfg.registration.issuer_keys == [tmp_path / "keys" / "a.pem"]
    assert cfg.loopback_only and not cfg.auth_required
    assert config.load(environ={"SCITT_OCI_LISTEN": "0.0.0.0:1"}).auth_required
    with pytest.raises(ConfigError, match=r"batch\.max_size: Input should be greater than or equal to 1"):
        config.load(environ={"SCITT_OCI_BATCH__MAX_SIZE": "0"})
    with pytest.raises(ConfigError, match="listen: Value error, must be HOST:PORT"):
        config.load(overrides={"listen": "nowhere"})
    with pytest.raises(ConfigError, match="listen: Value error, must be HOST:PORT"):
        config.load(overrides={"listen": "127.0.0.1:\u00b2"})  # a digit to isdigit(), not to int()
    with pytest.raises(ConfigError, match="Extra inputs are not permitted"):
        config.load(environ={"SCITT_OCI_NOPE": "1"})
    file.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        config.load(file, environ={})


def test_private_keys_open_to_others_are_refused(tmp_path: Path) -> None:
    import os

    from scitt_oci import keyfiles

    path = tmp_path / "k.pem"
    key_obj, created = keyfiles.private_key(path)
    assert created and oct(path.stat().st_mode & 0o777) == "0o600"
    os.chmod(path, 0o440)  # a Kubernetes Secret mounted with fsGroup
    assert keyfiles.private_key(path)[0].kid == key_obj.kid
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="must not be open to others"):
        keyfiles.private_key(path)


def _path_settings(model: type[BaseModel], prefix: str = "") -> list[tuple[str, bool]]:
    """(dotted name, is a list) of every Path setting, found by reading the annotations' text."""
    out: list[tuple[str, bool]] = []
    for name, field in model.model_fields.items():
        text = str(field.annotation)
        nested = [
            a
            for a in (field.annotation, *getattr(field.annotation, "__args__", ()))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if nested:
            out += [
                (f"{prefix}{name}[].{n}" if "list" in text else f"{prefix}{name}.{n}", lst)
                for n, lst in _path_settings(nested[0])
            ]
        elif "Path" in text:
            out.append((prefix + name, "list" in text))
    return out


def _nested(model: type[BaseModel], name: str) -> type[BaseModel]:
    annotation = model.model_fields[name].annotation
    found = [
        a
        for a in (annotation, *getattr(annotation, "__args__", ()))
        if isinstance(a, type) and issubclass(a, BaseModel)
    ]
    return found[0]


def _required_values(model: type[BaseModel]) -> dict[str, object]:
    """A list entry needs its required fields to load: plausible values for those that are not paths."""
    values: dict[str, object] = {"url": "127.0.0.1:5000", "name": "entry", "trusted_identities": ["*"]}
    return {name: values[name] for name, field in model.model_fields.items() if field.is_required() and name in values}


def test_every_path_setting_in_a_file_resolves_against_its_folder(tmp_path: Path) -> None:
    """All of them, including those in nested sections and in the list of registries (6 of 15 did before)."""
    settings = _path_settings(config.Config)
    assert len(settings) >= 15, settings
    doc: dict[str, object] = {}
    for dotted, is_list in settings:
        node = doc
        model: type[BaseModel] = config.Config
        parts = dotted.split(".")
        for part in parts[:-1]:
            model = _nested(model, part.removesuffix("[]"))
            child = (
                node.setdefault(part[:-2], [_required_values(model)])
                if part.endswith("[]")
                else node.setdefault(part, {})
            )
            if isinstance(child, list):
                child = child[0]
            assert isinstance(child, dict)
            node = child
        node[parts[-1]] = [f"rel/{dotted}"] if is_list else f"rel/{dotted}"
    folder = tmp_path / "etc"
    folder.mkdir()
    import yaml

    (folder / "scitt-oci.yaml").write_text(yaml.safe_dump(doc))
    cfg = config.load(folder / "scitt-oci.yaml", environ={})
    for dotted, is_list in settings:
        value: object = cfg
        for part in dotted.split("."):
            value = getattr(value, part.removesuffix("[]"))
            if part.endswith("[]"):
                assert isinstance(value, list)
                value = value[0]
        if is_list:
            assert isinstance(value, list)
            value = value[0]
        got = value
        assert got == folder / "rel" / dotted, (dotted, got)


def test_absolute_paths_and_flags_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "tls_cert: /etc/tls.crt\ntls_key: /etc/tls.key\nadmission: {trust_policy: p.yaml}\n"
    )
    cfg = config.load(tmp_path / "c.yaml", environ={}, overrides={"issuer_key": "relative.pem"})
    assert cfg.tls_cert == Path("/etc/tls.crt") and cfg.admission.trust_policy == tmp_path / "p.yaml"
    assert cfg.issuer_key == Path("relative.pem")  # flags and environment are relative to the working directory


def test_inline_tokens_need_16_characters_like_token_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth\.tokens: Value error, token 1 is shorter than 16 characters"):
        config.load(environ={}, overrides={"auth": {"tokens": ["a-long-enough-token-0123", "short"]}})
    assert config.load(environ={}, overrides={"auth": {"tokens": [" a-long-enough-token-0123 "]}}).auth.tokens == [
        "a-long-enough-token-0123"
    ]
