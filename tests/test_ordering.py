"""Every ordering of import / apply / revert / re-apply, each in a fresh interpreter (ddtrace-style).

A target module imported before apply is patched at once, one imported after is patched by the
post-import hook; either way it is wrapped exactly once, and revert restores the original object.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys, importlib
    import ascend_patch
    from ascend_patch.engine import JOURNAL
    from ascend_patch.engine.slots import AttrSlot

    def forward():
        return vars(sys.modules["transformers.activations"].GELUActivation)["forward"]

    def depth(f):
        n = 0
        while hasattr(f, "__wrapped__"):
            f, n = f.__wrapped__, n + 1
        return n

    original = None
    for step in sys.argv[1].split(","):
        if step == "import":
            importlib.import_module("transformers.activations")
            if not ascend_patch.active():
                original = original or forward()
        elif step == "apply":
            ascend_patch.apply("gelu", device="cpu")
        elif step == "revert":
            ascend_patch.revert("gelu")

    if "transformers.activations" not in sys.modules:
        importlib.import_module("transformers.activations")
    patched = ascend_patch.active() == ["gelu"]
    print("depth", depth(forward()), "patched", patched)
    cls = sys.modules["transformers.activations"].GELUActivation
    original = original or JOURNAL.original(AttrSlot(cls, "forward"))
    ascend_patch.revert()
    assert forward() is original, "not restored"
    assert depth(forward()) == 0
    print("restored")
    """
)

ORDERS = {
    "import,apply": 1,
    "apply,import": 1,
    "apply,revert,import": 0,
    "apply,revert,import,apply": 1,
    "apply,import,revert,apply,apply": 1,
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_ordering(order):
    result = subprocess.run([sys.executable, "-c", SCRIPT, order], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    depth, patched = ORDERS[order], ORDERS[order] == 1
    assert f"depth {depth} patched {patched}" in result.stdout
    assert "restored" in result.stdout
