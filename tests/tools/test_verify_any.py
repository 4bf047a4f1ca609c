"""verify and bench on models no recipe knows: a saved Hugging Face folder, a factory, a model object.

The folder holds a random-init ViT (no recipe is written against it) saved with ``save_pretrained``
and its image processor; the factory is a CUDA-written model (flash_attn, ``.cuda()``,
``device="cuda"`` in its forward) in tests/fixtures/factories.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ascend_patch
from ascend_patch.tools.bench import bench
from ascend_patch.tools.hf_folder import load_folder
from ascend_patch.tools.verify import verify

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FACTORY = FIXTURES / "factories" / "cuda_vit.py"
MINGTOK_REPO = FIXTURES / "repos" / "Ming-UniVision"


def by_output(run: dict) -> dict[str, dict]:
    return {o["name"]: o for o in run["outputs"]}


@pytest.fixture(scope="module")
def vit_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A ViT classifier saved with weights and its image processor, and the same config alone."""
    import transformers

    root = tmp_path_factory.mktemp("hf")
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, image_size=32, patch_size=8, num_labels=5)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(root / "vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "vit")
    config.save_pretrained(root / "vit-config")
    bert = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(bert).save_pretrained(root / "bert")
    return {"weights": root / "vit", "config": root / "vit-config", "text": root / "bert"}


# -- a Hugging Face folder ----------------------------------------------------------------------


def test_folder_random_init_on_sim_labelled_sim_with_versions(cli, vit_folders):
    run = cli("verify", vit_folders["config"], "--random-init", "--device", "sim", "--without", "gelu", "--json")
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["passed"] and data["random_init"] and data["subject"] == "vit-config"
    assert data["model"].startswith("random-init ViTForImageClassification from ")
    # "npu" never silently means the simulator.
    assert data["device"] == "sim" and data["device_type"] == "npu"
    env = data["environment"]
    assert env["device"] == "sim" and env["simulated"] and "simulated" in env["device_name"]
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] or env["versions"]["torch"] == torch.__version__
    assert set(env["versions"]) == {"torch", "torch_npu", "transformers", "ascend-patch"}
    assert env["versions"]["ascend-patch"] == ascend_patch.__version__
    assert env["versions"]["torch_npu"] == sys.modules["torch_npu"].__version__  # the simulator's, not "None"
    assert env["cann"] is None  # no toolkit on this machine: unknown, not made up
    full, no_gelu = data["runs"]
    logits = by_output(full)["logits"]
    assert logits["top1_agreement"] == 1.0 and logits["deterministic"]
    # The raw values on both sides, close but from two different runs.
    assert len(logits["sample"]) == len(logits["reference_sample"]) == 5
    assert max(abs(a - b) for a, b in zip(logits["sample"], logits["reference_sample"])) <= logits["max_abs_diff"]
    assert any(abs(v) > 0 for v in logits["reference_sample"])
    # The folder's own model, not a recipe's: the generic gelu patch still decides the GELU error.
    assert by_output(no_gelu)["logits"]["mean_relative_error"] > 3 * logits["mean_relative_error"]


def test_folder_with_weights_preprocesses_an_image_with_its_processor(cli, vit_folders, tmp_path):
    from PIL import Image

    pixels = (torch.rand(50, 70, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    Image.fromarray(pixels.numpy()).save(tmp_path / "cat.png")
    run = cli("verify", vit_folders["weights"], "--image", tmp_path / "cat.png", "--device", "sim", "--batch-size",
              "2", "--json")  # fmt: skip
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["model"] == f"ViTForImageClassification.from_pretrained({str(vit_folders['weights'])!r})"
    assert data["input"].endswith("cat.png") and data["batch_size"] == 2 and not data["random_init"]
    loaded = load_folder(str(vit_folders["weights"]))
    assert type(loaded.processor).__name__.startswith("ViTImageProcessor")
    made = loaded.inputs(2, image=tmp_path / "cat.png").kwargs["pixel_values"]
    expected = loaded.processor(images=Image.open(tmp_path / "cat.png").convert("RGB"),
                                return_tensors="pt")["pixel_values"]
    assert made.shape == (2, 3, 32, 32)
    torch.testing.assert_close(made[1:], expected)


def test_text_folder_gets_token_ids_and_a_mask(vit_folders):
    result = verify(str(vit_folders["text"]), device="sim", batch_size=3)
    assert result.passed and result.input.startswith("seeded random inputs")
    assert [o.name for o in result.runs[0].outputs] == ["last_hidden_state", "pooler_output"]
    inputs = load_folder(str(vit_folders["text"])).inputs(3)
    assert set(inputs.kwargs) >= {"input_ids", "attention_mask"}
    assert inputs.kwargs["input_ids"].dtype == torch.long and inputs.kwargs["input_ids"].shape[0] == 3


def test_bench_on_a_folder_json_carries_samples_and_environment(cli, vit_folders):
    run = cli("bench", vit_folders["config"], "--random-init", "--device", "sim", "--batch-sizes", "1", "3",
              "--warmup", "0", "--iters", "3", "--json")  # fmt: skip
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["device"] == "sim" and data["environment"]["simulated"] and data["subject"] == "vit-config"
    assert [r["batch_size"] for r in data["rows"]] == [1, 3]
    for row in data["rows"]:
        assert len(row["samples_ms"]) == 3 and row["p50_ms"] == sorted(row["samples_ms"])[1]


@pytest.fixture(scope="module")
def broken_folders(vit_folders, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Broken downloads of the ViT folder: each must be bad input (exit 2), never a FAIL (exit 1)."""
    import shutil

    import transformers

    root = tmp_path_factory.mktemp("broken")
    for name in ("badjson", "truncated", "other", "shape"):
        shutil.copytree(vit_folders["weights"], root / name)
    (root / "badjson" / "config.json").write_text("{not json")
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    bert = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, architectures=["BertModel"])
    bert.save_pretrained(root / "other")  # another model's config.json beside the ViT weights
    wider = transformers.ViTConfig.from_pretrained(root / "shape")
    wider.hidden_size = 48
    wider.save_pretrained(root / "shape")
    return root


@pytest.mark.parametrize(("name", "message"), [
    ("badjson", "config.json' cannot be read: "),
    ("truncated", "the weights do not load (SafetensorError"),
    ("other", "39 of 39 tensors of BertModel are not in the weights"),
    ("shape", "the weights do not load (RuntimeError"),
])  # fmt: skip
def test_a_broken_folder_is_bad_input_not_a_fail(cli, broken_folders, name, message):
    for command in ("verify", "bench"):
        run = cli(command, broken_folders / name, "--device", "cpu", "--batch-sizes" if command == "bench" else
                  "--seed", "1")  # fmt: skip
        assert run.code == 2 and "Traceback" not in run.err, run.err[-2000:]
        last = run.err.strip().splitlines()[-1]
        assert last.startswith(f"ascend-patch {command}: error: ") and message in last, last


def test_a_missing_dependency_of_the_model_code_is_one_line_naming_the_package(cli, tmp_path):
    (tmp_path / "needs_dep.py").write_text("import no_such_dependency_xyz.sub\n\ndef build():\n    pass\n")
    (tmp_path / "needs_cv2.py").write_text("import cv2\n")  # OpenCV: not a test dependency
    for name, package in [("needs_dep", "no_such_dependency_xyz"), ("needs_cv2", "opencv-python")]:
        run = cli("verify", "--factory", f"{tmp_path / name}.py:build", "--device", "cpu")
        assert run.code == 2 and "Traceback" not in run.err, run.err
        (line,) = run.err.strip().splitlines()
        assert line.startswith("ascend-patch verify: error: ") and f"pip install {package} " in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{config}"], "--random-init"),  # config.json alone, no weights
        (["{config}", "--random-init", "--tiny"], "--tiny"),
        (["{config}", "--random-init", "--recipe", "dinov3"], "Did you mean 'dinov2'?"),
        (["{config}", "--random-init", "--patches", "gelu,mingtok"], "a recipe: use --recipe"),
        (["{config}", "--random-init", "--without", "bogus"], "not a patch of vit-config"),
        (["{config}", "--random-init", "--without", ","], "name a patch"),
        (["{config}", "--random-init", "--without", "gleu"], "Did you mean 'gelu'?"),
        (["{config}", "--random-init", "--patches", "default,gelu", "--without", "dinov2"], "not a patch of"),
        (["{weights}", "--random-init", "--image", "{weights}/config.json"], "not an image"),
        (["{text}", "--image", "{weights}/config.json"], "takes no pixel_values"),
        (["dinov2", "--recipe", "mingtok"], "not for recipe 'dinov2'"),
        (["no/such-model-here"], "not a folder, a recipe, or a model in the local Hugging Face cache"),
        (["dinov2", "--factory", "x:y"], "not both"),
        ([], "nothing to run"),
        (["--factory", "no_such_module_x:build"], "no module named 'no_such_module_x'"),
        (["--factory", "missing.py:build"], "missing.py does not exist"),
        (["--factory", f"{FACTORY}:nope"], "has no function 'nope'"),
        (["--factory", f"{FACTORY}:build", "--image", "x.png"], "not for a factory"),
        (["--factory", f"{FACTORY}:build", "--seed", "3"], "--seed: not for a factory"),
        (["dinov2", "--repo", "."], "--repo: not for recipe 'dinov2'"),
        (["dinov2", "--tiny", "--model-path", "."], "give one"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, vit_folders, args, message):
    argv = [a.format(**{k: str(v) for k, v in vit_folders.items()}) for a in args]
    run = cli("verify", *argv, "--device", "cpu")
    assert run.code == 2, (run.out, run.err)
    last = run.err.strip().splitlines()[-1]  # after transformers' own "Loading weights" bars, where it loads
    assert last.startswith("ascend-patch verify: error: ") and message in last and "Traceback" not in run.err


# -- a factory ----------------------------------------------------------------------------------


def test_factory_of_a_cuda_written_model(cli):
    run = cli("verify", "--factory", f"{FACTORY}:build", "--device", "sim", "--without", "all", "gelu", "--json")
    assert run.code == 0, run.err
    data = json.loads(run.out)
    full, without_all, without_gelu = data["runs"]
    assert data["subject"] == "cuda_vit.py:build" and data["batch_size"] == 2  # the example batch as given
    assert data["model"] == f"TinyViT from factory {FACTORY}:build"
    # Its forward creates tensors on "cuda": the CPU reference needs the device patch, and says so.
    assert data["reference"].startswith("CPU fp32 under the patches (unpatched it raised AssertionError: Torch not "
                                        "compiled with CUDA enabled")
    assert full["passed"] and set(by_output(full)) == {"features", "logits"}
    assert by_output(full)["logits"]["top1_agreement"] == 1.0
    # Unpatched, in a fresh interpreter, the model cannot even be imported.
    assert not without_all["passed"] and without_all["outputs"] == []
    assert without_all["error"] == "ModuleNotFoundError: No module named 'flash_attn'"
    assert without_all["note"].startswith("a fresh interpreter")
    assert by_output(without_gelu)["features"]["mean_relative_error"] > \
        10 * by_output(full)["features"]["mean_relative_error"]


def test_the_users_clone_is_left_without_bytecode(cli, tmp_path):
    import shutil
    import sys

    clone = tmp_path / "clone"
    shutil.copytree(FACTORY.parent, clone, ignore=shutil.ignore_patterns("__pycache__"))
    sys.modules.pop("cuda_vit", None)
    before, sys.dont_write_bytecode = sys.dont_write_bytecode, False  # as in a user's shell
    run = cli("verify", "--factory", "cuda_vit:build", "--repo", clone, "--device", "cpu", "--without", "all")
    after, sys.dont_write_bytecode = sys.dont_write_bytecode, before
    sys.modules.pop("cuda_vit", None)
    assert run.code == 0, run.err
    assert not list(clone.rglob("__pycache__")) and not list(clone.rglob("*.pyc"))
    assert after is False  # the CLI's setting ended with the command


def test_factory_as_module_with_repo_and_batch_resampled(cli):
    run = cli("verify", "--factory", "cuda_vit:build", "--repo", FACTORY.parent, "--device", "sim", "--patches",
              "attention,device,gelu", "--batch-size", "3", "--json")  # fmt: skip
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["batch_size"] == 3 and data["patches"] == ["attention", "device", "gelu"]
    assert data["runs"][0]["active"] == ["attention", "device", "gelu"]
    bench_run = cli("bench", "--factory", "cuda_vit:build", "--repo", FACTORY.parent, "--device", "sim",
                    "--batch-sizes", "1", "5", "--warmup", "0", "--iters", "2", "--json")  # fmt: skip
    assert bench_run.code == 0, bench_run.err
    rows = json.loads(bench_run.out)["rows"]
    assert [r["batch_size"] for r in rows] == [1, 5] and all(len(r["samples_ms"]) == 2 for r in rows)


# -- the Python API ------------------------------------------------------------------------------


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU())
        self.cls, self.box = torch.nn.Linear(16, 3), torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> tuple:
        h = self.body(x) * scale
        return self.cls(h), (self.box(h), None), "not a tensor"


def test_api_model_and_inputs_outputs_flattened():
    torch.manual_seed(0)
    result = ascend_patch.verify(TwoHeads(), {"x": torch.randn(4, 8), "scale": 2.0}, device="sim",
                                 classifier_outputs=["output[0]"])
    assert result.passed and result.subject == "TwoHeads" and result.model == "TwoHeads (given)"
    names = [o.name for o in result.runs[0].outputs]
    assert names == ["output[0]", "output[1][0]"]
    assert result.runs[0].outputs[0].top1_agreement == 1.0 and result.runs[0].outputs[1].top1_agreement is None
    assert result.skipped == {"output[2]": "str"}
    assert "not compared (not tensors): output[2] (str)" in result.to_text()


def test_api_factory_function_and_custom_run_on_cpu():
    def build():
        torch.manual_seed(1)
        return TwoHeads(), (torch.randn(2, 8),)

    result = verify(build, device="cpu", run=lambda model, inputs: {"cls": inputs.call(model)[0]})
    assert result.passed and result.subject.endswith("build") and [o.name for o in result.runs[0].outputs] == ["cls"]
    assert result.runs[0].outputs[0].max_abs_diff == 0.0
    timed = bench(build, batch_sizes=[1, 4], warmup=0, iters=2, device="cpu", progress=False)
    assert [r.batch_size for r in timed.rows] == [1, 4] and timed.device == "cpu" and timed.subject.endswith("build")
    assert "samples/s" in timed.to_text()


def test_a_run_whose_outputs_do_not_match_the_reference_is_an_error_row():
    """An ablation that returns other outputs fails its row with the reason; the full run stands."""

    def run(model, inputs):
        out = inputs.call(model)[0]
        return {"cls": out} if out.device.type == "cpu" or "gelu" in ascend_patch.active() else {"other": out}

    torch.manual_seed(0)
    result = verify(TwoHeads(), torch.randn(2, 8), device="sim", patches=["gelu"], without=["gelu"], run=run)
    full, without_gelu = result.runs
    assert full.passed and result.passed and without_gelu.outputs == [] and without_gelu.without == ["gelu"]
    assert without_gelu.error == "RuntimeError: verify TwoHeads: run 'without gelu' returned no cls"
    assert "without gelu: raised RuntimeError" in result.to_text()


def test_recipe_and_patches_together_and_default():
    torch.manual_seed(0)
    result = verify(TwoHeads(), torch.randn(2, 8), device="sim", recipe="dinov2", patches=["default"],
                    without=["dinov2", "all"])
    assert result.patches[0] == "dinov2" and set(result.patches) >= set(ascend_patch.patches.DEFAULT_PATCHES)
    full, no_recipe, no_patches = result.runs
    assert "dinov2" in full.active and "device" in full.active and "dinov2" not in no_recipe.active
    assert "device" in no_recipe.active and no_patches.without == ["all"] and no_patches.active == []


# -- recipe checks --------------------------------------------------------------------------------


def test_checks_that_do_not_apply_are_listed_and_checks_that_raise_fail_the_run():
    from ascend_patch.recipes import Check
    from ascend_patch.tools.subjects import resolve
    from ascend_patch.tools.verify import checks_for, run_checks

    # MingTok's decode check on a model that is not MingTok: said, not run, not a crash.
    torch.manual_seed(0)
    result = verify(TwoHeads(), torch.randn(2, 8), device="sim", recipe="mingtok")
    assert result.passed and not any(o.check for o in result.runs[0].outputs)
    assert list(result.checks_not_run) == ["kv_cache_decode"]
    assert "check kv_cache_decode not run: TwoHeads is not a model it applies to" in result.to_text()

    def broken(model, inputs):
        raise KeyError("latent")

    subject = resolve(TwoHeads(), torch.randn(2, 8), recipe="mingtok")
    assert [c.name for c in checks_for(subject, TwoHeads())[0]] == []
    pairs, errors = run_checks([Check("decode", "", broken)], TwoHeads(), None)
    assert pairs == [] and errors == ["KeyError: 'latent' (in check decode)"]




def test_mingtok_kv_cache_check_fails_without_the_patches(cli, monkeypatch):
    monkeypatch.delenv("XFORMERS_ENABLED", raising=False)
    run = cli("verify", "mingtok", "--tiny", "--repo", MINGTOK_REPO, "--device", "sim", "--without", "all", "--json")
    assert run.code == 0, run.err
    data = json.loads(run.out)
    full, unpatched = data["runs"]
    check = {o["name"]: o for o in full["outputs"] if o["check"]}["kv_cache_decode"]
    assert check["check"] == "kv_cache_decode" and check["passed"] and check["mean_relative_error"] < 1e-5
    # Every forward output agrees without any patch - only the decode shows the upstream bug.
    assert all(o["passed"] for o in unpatched["outputs"] if not o["check"])
    broken = {o["name"]: o for o in unpatched["outputs"] if o["check"]}["kv_cache_decode"]
    assert not broken["passed"] and broken["mean_relative_error"] > 0.05
    assert unpatched["note"].startswith("a fresh interpreter") and data["passed"]
    text = cli("verify", "mingtok", "--tiny", "--repo", MINGTOK_REPO, "--device", "cpu").out
    assert "check kv_cache_decode  mingtok" in text and "checks: kv_cache_decode" in text


def test_third_party_recipe_check_runs_on_a_factory(tmp_path):
    """The toyseg recipe (an entry point) declares a check; verify runs it on the user's factory."""
    plugin = FIXTURES / "recipe_plugin"
    (tmp_path / "toyseg_build.py").write_text(
        "import torch, toyseg\n\n"
        "def build():\n"
        "    toyseg.fix_random_seeds(0)\n"
        "    return toyseg.ToySeg().eval(), torch.randn(2, 3, 8, 8)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND_PATCH")}
    env["PYTHONPATH"] = os.pathsep.join([str(plugin), str(tmp_path), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "ascend_patch.tools.cli", "verify", "--factory", "toyseg_build:build",
                           "--recipe", "toyseg", "--device", "sim", "--json"], capture_output=True, text=True,
                          env=env, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    checks = [o for o in data["runs"][0]["outputs"] if o["check"]]
    assert [(o["check"], o["name"], o["passed"]) for o in checks] == [("coordinate_grid", "grid", True)]
    assert checks[0]["max_abs_diff"] == 0.0
    assert "toyseg" in data["runs"][0]["active"]


def test_bf16_run_reports_cpu_rounding_beside_it():
    result = verify("dinov2", device="sim", dtype="bf16", tiny=True)
    device_run, rounding = result.runs
    assert rounding.label == "cpu bf16" and rounding.rounding and rounding.active == []
    assert result.passed == device_run.passed  # the rounding row is not part of the verdict
    for port, cpu in zip(device_run.outputs, rounding.outputs):
        assert port.name == cpu.name and 1e-4 < cpu.mean_relative_error < 0.05
    assert "from rounding alone" in result.to_text()


def test_hub_id_in_the_local_cache(cli, vit_folders, tmp_path, monkeypatch):
    """``verify org/name`` reads a model the Hugging Face cache already holds; nothing is downloaded."""
    import shutil

    from huggingface_hub import constants

    snapshot = tmp_path / "models--acme--tiny-vit" / "snapshots" / "0123abcd"
    shutil.copytree(vit_folders["weights"], snapshot)
    (tmp_path / "models--acme--tiny-vit" / "refs").mkdir()
    (tmp_path / "models--acme--tiny-vit" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    run = cli("verify", "acme/tiny-vit", "--device", "cpu", "--json")
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["subject"] == "acme/tiny-vit" and str(snapshot) in data["model"] and data["passed"]
    missing = cli("verify", "acme/not-cached", "--device", "cpu")
    assert missing.code == 2 and "not a folder, a recipe, or a model in the local Hugging Face cache" in missing.err
