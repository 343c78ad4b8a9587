"""The FP16 policy comparison tables in benchmarks/fp16_policy.md are generated from the committed JSON: a block
``<!-- fp16-policy-table: FILE.json -->`` … ``<!-- /fp16-policy-table -->`` must equal what
``benchmarks/fp16_policy.py --table`` renders from that file (regenerate: ``python3 benchmarks/fp16_policy.py
--update benchmarks/fp16_policy.md``)."""

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
    text = (ROOT / "benchmarks" / "fp16_policy.md").read_text()
    assert list(BLOCK.finditer(text)), "benchmarks/fp16_policy.md should embed fp16-policy-table blocks"
    assert _script().render_blocks(text) == text, "run python3 benchmarks/fp16_policy.py --update benchmarks/fp16_policy.md"


def test_a_stale_table_is_told_apart():
    script = _script()
    text = (ROOT / "benchmarks" / "fp16_policy.md").read_text()
    stale = text.replace("| spec |", "| hand |", 1)
    assert stale != text and script.render_blocks(stale) == text


def test_the_tables_have_a_row_for_every_default_model():
    """Every family's default variant has a row: its figures, or the error its run ended with."""
    from deploykit.zoo.registry import families, get_spec

    rows = {}
    for m in BLOCK.finditer((ROOT / "benchmarks" / "fp16_policy.md").read_text()):
        rows.update(json.loads((ROOT / m["json"]).read_text())["rows"])
    assert {get_spec(name).family for name in rows} == set(families())
    for name, row in rows.items():
        assert "error" in row or {"spec", "auto"} <= set(row["policies"]), name
