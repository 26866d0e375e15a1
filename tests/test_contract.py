"""`kdprune.contract` is the one place that defines the names layers agree on: no other
source file under kdprune/, sweeps/, bench/ or analysis/ spells them again.

What counts as spelling them again (read from each file's syntax tree):
- a string equal to an MLflow tag name (``"kdprune.role"``...);
- a module-level constant equal to a contract name (``LATENCY = "latency_ms_per_audio_s"``);
- a tuple, list or set of strings, or a dict keyed by strings, holding at least 3/4 of
  one contract group (methods, schedules, knobs, params, final metrics, objectives, rung
  metrics; at least two names): a copy of that group, maybe a drifted one, or a per-name
  map (knobs, labels, types) that belongs beside the names;
- a module- or class-level constant holding exactly the names of one contract collection
  (``DEFAULT_OBJECTIVES = ("wer_dev", "params")`` again under another name).
A collection passed straight to a call (``SpaceConfig(methods=("l0", "lrf"))``) is a use,
and a selection of a few names (``cols = ["row", "params", "wer_dev"]``) is a view, not a
definition. Tests are not scanned: they spell the DESIGN §3 names on purpose, to check them.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from kdprune import contract

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("kdprune", "sweeps", "bench", "analysis")
CONTRACT = REPO / "kdprune" / "contract.py"

# Files of the parts another engineer is refactoring; to be removed by the compress
# refactor (switch them to kdprune.contract, then delete their line here).
NOT_YET_SWITCHED: set[str] = set()

# Whole categories of names: a collection holding most of one is a copy of it.
GROUPS = {
    "METHODS": contract.METHODS,
    "SCHEDULES": contract.SCHEDULES,
    "KNOBS": contract.KNOBS,
    "PARAMS": contract.PARAMS,
    "FINAL_METRICS": contract.FINAL_METRICS,
    "OBJECTIVES": contract.OBJECTIVES,
    "RUNG_METRICS keys": tuple(contract.RUNG_METRICS),
    "RUNG_METRICS names": tuple(contract.RUNG_METRICS.values()),
}
# Every named collection of the contract: a constant holding exactly its names is a copy.
COLLECTIONS = {
    name: frozenset(value)
    for name, value in vars(contract).items()
    if name.isupper()
    and isinstance(value, (tuple, dict))
    and len(value) >= 2
    and all(isinstance(v, str) for v in value)
}
TAGS = {v for k, v in vars(contract).items() if k.startswith("TAG_")}
NAMES = {n for group in GROUPS.values() for n in group}


def _strings(node: ast.AST | None) -> list[str] | None:
    """The strings of a tuple/list/set of string constants, or a dict's string keys."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = node.elts
    elif isinstance(node, ast.Dict):
        items = node.keys
    else:
        return None
    if items and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in items):
        return [e.value for e in items]
    return None


def _constants(body: list[ast.stmt]):
    """The assignments of a module's or class's body: (line, value)."""
    for node in body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            yield node.lineno, node.value


def definitions(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of every contract name defined in a syntax tree."""
    uses = {  # collections passed to a call, and `__all__` (function names, not metrics)
        id(a)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        for a in [*n.args, *(k.value for k in n.keywords)]
    }
    uses |= {
        id(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in TAGS:
            found.append((node.lineno, f"tag {node.value!r}"))
        strings = _strings(node)
        if strings is not None and id(node) not in uses:
            for name, group in GROUPS.items():
                hit = set(strings) & set(group)
                if len(hit) >= 2 and 4 * len(hit) >= 3 * len(group):
                    found.append((node.lineno, f"{name} {sorted(hit)}"))
    module = getattr(tree, "body", [])
    for line, value in _constants(module):  # a field default (`method: str = "l0"`) is a value
        if isinstance(value, ast.Constant) and value.value in NAMES:
            found.append((line, f"constant {value.value!r}"))
    classes = [n.body for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    for line, value in (c for body in [module, *classes] for c in _constants(body)):
        strings = _strings(value)
        for name, names in COLLECTIONS.items():
            if strings is not None and frozenset(strings) == names:
                found.append((line, f"a copy of {name}"))
    return sorted(set(found))


def sources() -> list[tuple[str, str]]:
    """(path relative to the repo, Python source) of every scanned file; notebooks give
    their code cells."""
    out = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*")):
            rel = str(path.relative_to(REPO))
            if path == CONTRACT or ".ipynb_checkpoints" in rel:
                continue
            if path.suffix == ".py":
                out.append((rel, path.read_text()))
            elif path.suffix == ".ipynb":
                cells = json.loads(path.read_text())["cells"]
                code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
                lines = "\n".join(code).splitlines()
                out.append((rel, "\n".join(ln for ln in lines if not ln.startswith("%"))))
    return out


def test_no_contract_name_is_defined_outside_the_contract():
    offences = []
    for rel, text in sources():
        if rel in NOT_YET_SWITCHED:
            continue
        offences += [f"{rel}:{line}: {what}" for line, what in definitions(ast.parse(text))]
    assert not offences, "defined outside kdprune/contract.py:\n" + "\n".join(offences)


def test_the_allowlist_names_only_files_that_still_need_it():
    """An allowlisted file that is clean (or gone) must leave the list."""
    texts = dict(sources())
    stale = [rel for rel in NOT_YET_SWITCHED if rel not in texts or not definitions(
        ast.parse(texts[rel]))]  # fmt: skip
    assert not stale, f"switched already: remove {stale} from NOT_YET_SWITCHED"


@pytest.mark.parametrize(
    ("code", "caught"),
    [
        ('METHODS = ("l0", "lrf", "small", "none")', True),
        (  # FINAL_METRICS without "rtf", under another name
            'USER_ATTRS = ("wer_dev", "wer_test", "params", "encoder_params", "params_ratio", '
            '"latency_ms_per_audio_s", "achieved_sparsity")',
            True,
        ),
        ('knob = {"l0": "target_sparsity", "small": "target_sparsity", "lrf": "rank_ratio"}', True),
        ('def f(run):\n    return run.data.tags.get("kdprune.role")', True),
        ('LATENCY = "latency_ms_per_audio_s"', True),
        ('for k in ("target_sparsity", "rank_ratio"):\n    pass', True),
        ('SpaceConfig(methods=("l0", "lrf"), kd_weights=(0.0, 1.0))', False),  # a use
        ('MATCH_OBJECTIVES = ("wer_dev", "params")', True),  # DEFAULT_OBJECTIVES again
        ('cols = ["row", "params", "wer_dev"]', False),  # a selection, not a copy
        ('row = {"method": "l0", "target_sparsity": 0.5}', False),  # values, not names
    ],
)
def test_the_scan_tells_a_definition_from_a_use(code, caught):
    assert bool(definitions(ast.parse(code))) is caught


def test_the_contract_is_consistent():
    assert set(contract.OBJECTIVES) <= set(contract.FINAL_METRICS)
    assert set(contract.DEFAULT_OBJECTIVES) <= set(contract.OBJECTIVES)
    assert set(contract.OBJECTIVE_ALIASES.values()) <= set(contract.OBJECTIVES)
    assert set(contract.METHOD_KNOB) <= set(contract.METHODS)
    assert set(contract.METHOD_KNOB.values()) == set(contract.KNOBS) <= set(contract.PARAMS)
    assert set(contract.METHOD_LABELS) == set(contract.METHODS)
    assert set(contract.METRIC_LABELS) == set(contract.FINAL_METRICS)
    assert set(contract.PERCENT_METRICS + contract.COUNT_METRICS) <= set(contract.FINAL_METRICS)
    assert {"chunk_size", "streaming"} <= set(contract.PARAMS)
    assert contract.PARAM_TYPES["chunk_size"] == "int"
    assert "rtf" in contract.FINAL_METRICS


def test_the_contract_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, kdprune.contract; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
