"""The documentation names what the code has: every configuration key, every reason code."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from scitt_oci.config import Config
from scitt_oci.scitt.reasons import Reason

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _keys(ann, prefix + name + ".")
        else:
            out.append(prefix + name)
    return out


def test_every_configuration_key_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [k for k in _keys(Config) if f"`{k}`" not in text]
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_every_reason_code_is_documented() -> None:
    text = (DOCS / "trust-policy.md").read_text()
    assert not [r.value for r in Reason if f"`{r.value}`" not in text]
