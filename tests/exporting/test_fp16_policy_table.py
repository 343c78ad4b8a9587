"""The FP16 policy comparison tables in benchmarks/README.md are generated from the committed JSON: a block
``<!-- fp16-policy-table: FILE.json -->`` … ``<!-- /fp16-policy-table -->`` must equal what
``benchmarks/fp16_policy.py --table`` renders from that file (regenerate: ``python3 benchmarks/fp16_policy.py
--table --out DIR``, DIR holding the JSON)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- fp16-policy-table: (?P<json>\S+) -->\n(?P<body>.*?)<!-- /fp16-policy-table -->", re.S)


def _script():
    spec = importlib.util.spec_from_file_location("fp16_policy_script", ROOT / "benchmarks" / "fp16_policy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_fp16_tables_match_their_json():
    blocks = list(BLOCK.finditer((ROOT / "benchmarks" / "README.md").read_text()))
    assert blocks, "benchmarks/README.md should embed the FP16 policy comparison as fp16-policy-table blocks"
    table = _script().table
    for m in blocks:
        data = json.loads((ROOT / m["json"]).read_text())
        assert m["body"] == table(data) + "\n", f"{m['json']}: run python3 benchmarks/fp16_policy.py --table"


def test_the_tables_have_a_row_for_every_default_model():
    """Every family's default variant has a row: its figures, or the error its run ended with."""
    from deploykit.zoo.registry import families, get_spec

    rows = {}
    for m in BLOCK.finditer((ROOT / "benchmarks" / "README.md").read_text()):
        rows.update(json.loads((ROOT / m["json"]).read_text())["rows"])
    assert {get_spec(name).family for name in rows} == set(families())
    for name, row in rows.items():
        assert "error" in row or {"spec", "auto"} <= set(row["policies"]), name
