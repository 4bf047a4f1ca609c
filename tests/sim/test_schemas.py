"""The simulated ops keep the signatures of the real ones (schemas recorded from the torch_npu wheel)."""

from __future__ import annotations

import inspect
import json
import zipfile
from pathlib import Path

import pytest
import torch

from ascend_patch.sim import torch_npu_module

REPO = Path(__file__).resolve().parents[2]
DATA = json.loads((REPO / "tests" / "data" / "npu_op_schemas.json").read_text(encoding="utf-8"))


def test_recorded_schemas_come_from_the_wheel_the_simulator_claims():
    assert DATA["torch_npu_version"] == torch_npu_module.SCHEMA_VERSION
    assert DATA["source"] == "torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml"
    assert DATA["wheel"].startswith(f"torch_npu-{DATA['torch_npu_version']}-")
    assert torch_npu_module.VERSION == f"{DATA['torch_npu_version']}.sim"


@pytest.mark.parametrize("name", sorted(DATA["schemas"]))
def test_signature_matches_the_op_schema(sim_npu, name):
    import torch_npu

    schema = torch._C.parse_schema(DATA["schemas"][name])
    assert schema.name == name
    params = list(inspect.signature(getattr(torch_npu, name)).parameters.values())
    assert [p.name for p in params] == [a.name for a in schema.arguments]
    for param, arg in zip(params, schema.arguments):
        expected_kind = inspect.Parameter.KEYWORD_ONLY if arg.kwarg_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert param.kind == expected_kind, param.name
        if arg.has_default_value():
            assert param.default == arg.default_value, param.name
            assert type(param.default) is type(arg.default_value), param.name  # 1.0 is not 1, True is not 1
        else:
            assert param.default is inspect.Parameter.empty, param.name


def test_signature_check_would_catch_a_drift():
    # The comparison above is only as good as the parser: make sure it sees what matters.
    schema = torch._C.parse_schema("f(Tensor self, *, str approximate='none', float scale=1.) -> Tensor")
    kinds = [(a.name, a.kwarg_only, a.default_value) for a in schema.arguments]
    assert kinds == [("self", False, None), ("approximate", True, "none"), ("scale", True, 1.0)]
    assert type(schema.arguments[2].default_value) is float


def test_refresh_tool_extracts_the_default_overload(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("refresh_npu_schemas", REPO / "tools" / "refresh_npu_schemas.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    yaml_text = (
        "custom:\n"
        "- func: npu_gelu_backward(Tensor grad_output, Tensor self, *, str approximate='none') -> Tensor\n"
        "- func: npu_gelu(Tensor self, *, str approximate='none') -> Tensor\n"
        "  impl_ns: op_api\n"
        "- exposed: true\n"
        "  func: npu_fusion_attention.out(Tensor query, *, Tensor(a!) out) -> Tensor(a!)\n"
        "- exposed: true\n"
        "  func: npu_fusion_attention(Tensor query, Tensor key, Tensor value, int head_num, str input_layout) -> Tensor\n"
    )
    wheel = tmp_path / "torch_npu-9.9.9-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(tool.SCHEMA_FILE, yaml_text)
        archive.writestr("torch_npu/version.py", "__version__ = '9.9.9'\ngit_version = 'abc'\n")
    out = tmp_path / "schemas.json"
    assert tool.main([str(wheel), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["torch_npu_version"] == "9.9.9" and data["wheel"] == wheel.name
    assert data["schemas"] == {
        "npu_gelu": "npu_gelu(Tensor self, *, str approximate='none') -> Tensor",
        "npu_fusion_attention": "npu_fusion_attention(Tensor query, Tensor key, Tensor value, int head_num, "
        "str input_layout) -> Tensor",
    }
    with pytest.raises(SystemExit, match="no schema for: npu_gelu"):
        tool.extract_schemas("custom:\n- func: other(Tensor x) -> Tensor\n", ops=("npu_gelu",))
