"""C2SP tlog-policy (c2sp.org/tlog-policy): known logs, witnesses, groups and the quorum rule.

log <vkey> [<url>]
witness <name> <vkey> [<url>]
group <name> all|any|<k> <member>...
quorum <name>|none
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from scitt_oci.errors import PolicyError, ScittOciError
from scitt_oci.tlog import note
from scitt_oci.tlog.note import COSIGNATURE_V1, ED25519, Verifier


@dataclass(frozen=True)
class Witness:
    name: str
    key: Verifier
    url: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass
class Policy:
    logs: list[tuple[Verifier, str | None]] = field(default_factory=list)
    witnesses: dict[str, Witness] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    quorum: str = "none"

    @property
    def log_keys(self) -> list[Verifier]:
        return [k for k, _ in self.logs]

    @property
    def witness_keys(self) -> list[Verifier]:
        return [w.key for w in self.witnesses.values()]

    def satisfied(self, cosigned: Iterable[Verifier]) -> bool:
        """Whether the witnesses whose cosignatures verified reach the quorum."""
        have = {w.name for w in self.witnesses.values() if w.key in set(cosigned)}

        def met(name: str) -> bool:
            if name in self.witnesses:
                return name in have
            group = self.groups[name]
            return sum(met(m) for m in group.members) >= group.threshold

        return self.quorum == "none" or met(self.quorum)

    def describe(self) -> str:
        if self.quorum == "none":
            return "no witness quorum"
        if self.quorum in self.witnesses:
            return f"a cosignature by {self.quorum}"
        g = self.groups[self.quorum]
        return f"group {g.name}: {g.threshold} of {', '.join(g.members)}"


def _fields(line: str) -> list[str]:
    return line.replace("\t", " ").split()


def parse(text: str) -> Policy:
    """`PolicyError` with the line number for anything the spec does not allow."""
    builder = _Builder()
    for number, raw in enumerate(text.split("\n"), 1):
        words = _fields(raw)
        if not words or words[0].startswith("#"):
            continue
        try:
            builder.line(words)
        except ScittOciError as exc:  # ours, or a vkey that does not parse
            raise PolicyError(f"tlog policy line {number}: {exc}") from None
    if builder.quorum is None:
        raise PolicyError("tlog policy has no quorum line")
    builder.policy.quorum = builder.quorum
    return builder.policy


class _Builder:
    """The policy read so far; each `line` adds one line's definition or raises `PolicyError` saying why not."""

    def __init__(self) -> None:
        self.policy = Policy()
        self.quorum: str | None = None
        self.seen_keys: set[bytes] = set()

    def line(self, words: list[str]) -> None:
        kind = words[0]
        if kind == "log":
            self._log(words)
        elif kind == "witness":
            self._witness(words)
        elif kind == "group":
            self._group(words)
        elif kind == "quorum":
            self._quorum(words)
        else:
            raise PolicyError(f"unknown keyword {kind[:40]!r}")

    def _key(self, vkey: str, sig_type: int, what: str) -> Verifier:
        key = note.parse_vkey(vkey)
        if key.sig_type != sig_type:
            raise PolicyError(f"{what} key {key.name} is not {_KEY_TYPES[sig_type]}")
        if key.public in self.seen_keys:
            raise PolicyError(f"duplicate key {key.name}")
        self.seen_keys.add(key.public)
        return key

    def _new_name(self, name: str) -> str:
        if name == "none" or name in self.policy.witnesses or name in self.policy.groups:
            raise PolicyError(f"name {name!r} is already defined or reserved")
        return name

    def _defined(self, name: str) -> bool:
        return name in self.policy.witnesses or name in self.policy.groups

    def _log(self, words: list[str]) -> None:
        if len(words) not in (2, 3):
            raise PolicyError("expected 'log <vkey> [<url>]'")
        key = self._key(words[1], ED25519, "log")
        self.policy.logs.append((key, words[2] if len(words) == 3 else None))

    def _witness(self, words: list[str]) -> None:
        if len(words) not in (3, 4):
            raise PolicyError("expected 'witness <name> <vkey> [<url>]'")
        name = self._new_name(words[1])
        key = self._key(words[2], COSIGNATURE_V1, "witness")
        self.policy.witnesses[name] = Witness(name, key, words[3] if len(words) == 4 else None)

    def _group(self, words: list[str]) -> None:
        if len(words) < 4:
            raise PolicyError("expected 'group <name> all|any|<k> <member>...'")
        name, rule, members = self._new_name(words[1]), words[2], tuple(words[3:])
        for m in members:
            if not self._defined(m):
                raise PolicyError(f"group {name}: member {m!r} is not defined on an earlier line")
        if rule == "all":
            k = len(members)
        elif rule == "any":
            k = 1
        elif rule.isascii() and rule.isdigit() and not rule.startswith("0") and 1 <= int(rule) <= len(members):
            k = int(rule)
        else:
            raise PolicyError(f"group {name}: threshold {rule!r} is not all, any or 1..{len(members)}")
        self.policy.groups[name] = Group(name, k, members)

    def _quorum(self, words: list[str]) -> None:
        if len(words) != 2:
            raise PolicyError("expected 'quorum <name>'")
        if self.quorum is not None:
            raise PolicyError("a policy has exactly one quorum line")
        if words[1] != "none" and not self._defined(words[1]):
            raise PolicyError(f"quorum {words[1]!r} is not a witness or group defined earlier")
        self.quorum = words[1]


_KEY_TYPES = {ED25519: "an Ed25519 note key (type 0x01)", COSIGNATURE_V1: "a cosignature/v1 key (type 0x04)"}


def from_trust_policy(doc: object, service: str | None = None) -> Policy:
    """The witness policy a trust policy's YAML names for one transparency service:

        transparency_services:
          - name: wabbit
            keys: [...]
            tlog:
              vkey: "<the service's note vkey>"
              witnesses: [{name: acme, vkey: "<cosignature/v1 vkey>"}]
              quorum: 1          # how many of them must cosign (0 or absent: none)

    `service` picks the entry by name; without it, the one entry that has `tlog`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("transparency_services"), list):
        raise PolicyError("trust policy: expected a mapping with a transparency_services list")
    entries = [e for e in doc["transparency_services"] if isinstance(e, dict) and "tlog" in e]
    if service is not None:
        entries = [e for e in entries if e.get("name") == service]
    if len(entries) != 1:
        which = f"named {service!r} " if service else ""
        raise PolicyError(
            f"trust policy: expected one transparency service {which}with a `tlog` section, found {len(entries)}"
        )
    name = entries[0].get("name")
    section = entries[0]["tlog"]
    where = f"transparency_services[{name}].tlog"
    if not isinstance(section, dict) or set(section) - {"vkey", "witnesses", "quorum"} or "vkey" not in section:
        raise PolicyError(f"{where}: expected {{vkey, witnesses, quorum}} with a vkey")
    lines = [f"log {section['vkey']}"]
    witnesses = section.get("witnesses") or []
    if not isinstance(witnesses, list):
        raise PolicyError(f"{where}.witnesses: expected a list")
    names = []
    for i, w in enumerate(witnesses):
        if not isinstance(w, dict) or set(w) != {"name", "vkey"}:
            raise PolicyError(f"{where}.witnesses[{i}]: expected {{name, vkey}}")
        names.append(str(w["name"]))
        lines.append(f"witness {w['name']} {w['vkey']}")
    quorum = section.get("quorum", 0)
    if not isinstance(quorum, int) or isinstance(quorum, bool) or not 0 <= quorum <= len(names):
        raise PolicyError(f"{where}.quorum: expected a number from 0 to {len(names)}")
    if quorum:
        lines.append(f"group quorum-of-{name} {quorum} {' '.join(names)}")
        lines.append(f"quorum quorum-of-{name}")
    else:
        lines.append("quorum none")
    try:
        return parse("\n".join(lines))
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc}") from None
