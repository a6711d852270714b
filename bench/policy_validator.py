"""Cold-start cost of validating a trust policy by hand (scitt_oci.verify.trust) or with a schema library.

Each case is `python -c CODE` in a fresh interpreter; the cases are interleaved over N rounds so that
load from other work spreads over all of them. Printed: min and median wall time, and min CPU time
(user + system of the child: much less disturbed by other work on a shared machine), each also as
the difference to the trust module alone. Run from outside the tree (`cd /tmp`) with the project's
interpreter:  python bench/policy_validator.py [N]   (ADR 0005 records the figures).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time

SCHEMA = (
    "{'type': 'object', 'required': ['transparency_services'], 'additionalProperties': False, 'properties': {"
    "'transparency_services': {'type': 'array', 'items': {'type': 'object', 'required': ['name'],"
    " 'additionalProperties': False, 'properties': {'name': {'type': 'string'}}}},"
    "'mode': {'enum': ['enforce', 'audit']}}}"
)
DOC = "{'transparency_services': [{'name': 'ts'}], 'mode': 'audit'}"
JSONSCHEMA = f"import jsonschema\njsonschema.Draft202012Validator({SCHEMA}).validate({DOC})"
PYDANTIC = (
    "from pydantic import BaseModel, ConfigDict\n"
    "class S(BaseModel):\n    model_config = ConfigDict(extra='forbid')\n    name: str\n"
    "class P(BaseModel):\n    model_config = ConfigDict(extra='forbid')\n"
    "    transparency_services: list[S]\n    mode: str = 'enforce'\n"
    f"P.model_validate({DOC})"
)
TRUST = "import scitt_oci.verify.trust"
CASES = {
    "bare interpreter": "pass",
    "trust module (hand-written validation)": TRUST,
    "trust module + jsonschema (import, one small schema, one validation)": f"{TRUST}\n{JSONSCHEMA}",
    "trust module + pydantic (import, two small models, one validation)": f"{TRUST}\n{PYDANTIC}",
    "trust module + scitt_oci.config (the configuration's pydantic models)": f"{TRUST}\nimport scitt_oci.config",
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(rounds: int) -> None:
    wall: dict[str, list[float]] = {name: [] for name in CASES}
    cpu: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, code in CASES.items():
            started, used = time.perf_counter(), _cpu()
            subprocess.run([sys.executable, "-c", code], check=True)
            wall[name].append((time.perf_counter() - started) * 1000)
            cpu[name].append((_cpu() - used) * 1000)
    base_wall = min(wall["trust module (hand-written validation)"])
    base_cpu = min(cpu["trust module (hand-written validation)"])
    print("| case | wall min | wall median | CPU min | wall min, added | CPU min, added |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in CASES:
        w, c = min(wall[name]), min(cpu[name])
        print(
            f"| {name} | {w:.1f} ms | {statistics.median(wall[name]):.1f} ms | {c:.1f} ms "
            f"| {w - base_wall:+.1f} ms | {c - base_cpu:+.1f} ms |"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
