"""Which transformers versions the mobilevit recipe covers, measured: one scratch venv per version.

The recipe's job is that ``MobileViTForImageClassification.from_pretrained(folder,
attn_implementation="sdpa")`` - a line CUDA ports pass to every model - loads MobileViT's eager
attention instead of raising. transformers moved that check around 4.54 (the classmethod
``_autoset_attn_implementation`` became the instance method ``_check_and_adjust_attn_implementation``),
so the only trustworthy answer to "which versions does it cover" is to run it on each.

Per version, in that version's venv (``--probe``, one JSON line): a tiny random MobileViT built from
a real ``MobileViTConfig`` is saved with ``save_pretrained``, then

- unpatched: ``from_pretrained(folder, attn_implementation="sdpa")`` (and ``_from_config``) - raises?
- under ``ascend_patch.patched("mobilevit", device=cpu|sim)``: the same loads, then the logits
  compared with the unpatched ``attn_implementation="eager"`` model of the same folder (max abs diff;
  fp32 on both sides, so 0 is expected), and what the report says of the ``mobilevit`` patch
  (patched / skipped with its reason / found nothing); and ``attn_implementation="flash_attention_2"``
  under the recipe (on 4.52 and older also the deprecated ``use_flash_attention_2=True``).

Outcomes: ``works`` (loads, eager config, logits equal), ``raises: <error>``, ``skipped: <reason>``.

Scratch venvs live outside the repository, one folder per version under ``--root``: ``base`` holds
torch 2.13.0 (installed first: a looser torch requirement would pull a multi-GB CUDA build) and the
shared pure-Python dependencies; each version's venv holds only transformers and its own
dependencies, and a ``.pth`` file puts ``base`` and this checkout on its path::

    python benchmarks/mobilevit_transformers_versions.py --create              # build missing venvs, then measure
    python benchmarks/mobilevit_transformers_versions.py --versions 4.45 4.54  # measure some
    python benchmarks/mobilevit_transformers_versions.py --current             # plus this interpreter's transformers

Creating all venvs takes ~10 minutes and ~3.5 GB; measuring takes ~10 s per version on two cores.
The table printed is the one in docs/compatibility.md ("transformers versions: the mobilevit recipe").
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A few minors across 4.45 .. 4.53 (old attention check), 4.54+ (new check), the last 4.x, and 5.x.
VERSIONS = ("4.45", "4.46", "4.47", "4.48", "4.49", "4.50", "4.51", "4.52", "4.53",
            "4.54", "4.55", "4.56", "4.57", "5.0", "5.24")
BASE_PACKAGES = ("numpy", "Pillow", "packaging", "wrapt", "einops", "safetensors", "tqdm")


# -- the probe (runs inside one version's venv) ---------------------------------------------------


# Upstream's messages, cut to what tells them apart.
SHORTER = {"does not support an attention implementation through torch.nn.functional.scaled_dot_product_attention":
           "does not support ... scaled_dot_product_attention"}


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    for long, short in SHORTER.items():
        if long in text:
            text = "... " + short
    return f"{type(exc).__name__}: {text[:90]}"


def probe() -> dict[str, object]:
    import torch
    import transformers
    from transformers import MobileViTConfig, MobileViTForImageClassification, PreTrainedModel

    import ascend_patch
    from ascend_patch.tools.models import torch_default_init

    out: dict[str, object] = {"transformers": transformers.__version__, "torch": torch.__version__}
    torch.manual_seed(0)
    config = MobileViTConfig(hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 40, 48, 96],
                             num_attention_heads=4, image_size=64, patch_size=2, num_labels=10)
    model = MobileViTForImageClassification(config).eval()
    torch_default_init(model)  # O(1) logits: MobileViT's own init gives ~1e-13
    pixels = torch.rand(2, 3, 64, 64)

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)

        def load_sdpa() -> torch.nn.Module:
            loaded = MobileViTForImageClassification.from_pretrained(folder, attn_implementation="sdpa").eval()
            MobileViTForImageClassification._from_config(config, attn_implementation="sdpa")
            return loaded

        def load_flash() -> None:
            MobileViTForImageClassification.from_pretrained(folder, attn_implementation="flash_attention_2")
            old_check = getattr(PreTrainedModel, "_autoset_attn_implementation", None)  # <= 4.53
            if old_check is not None and "use_flash_attention_2" in inspect.signature(old_check).parameters:
                # The deprecated spelling, 4.52 and older.
                MobileViTForImageClassification.from_pretrained(folder, use_flash_attention_2=True)
                out["flash_flag"] = True

        try:
            load_sdpa()
            out["unpatched"] = "works"
        except Exception as exc:
            out["unpatched"] = f"raises: {_short(exc)}"

        reference = MobileViTForImageClassification.from_pretrained(folder, attn_implementation="eager").eval()
        with torch.no_grad():
            expected = reference(pixel_values=pixels).logits

        for device in ("cpu", "sim"):
            try:
                with ascend_patch.patched("mobilevit", device=device):
                    rows = ascend_patch.report(internal=True).filter(patch="mobilevit")
                    skipped = [r.detail for r in rows if r.action == "skipped"]
                    if skipped:
                        out[device] = f"skipped: {skipped[0]}"
                    try:
                        loaded = load_sdpa()
                    except Exception as exc:
                        out.setdefault(device, f"raises: {_short(exc)}")
                        continue
                    attn = loaded.config._attn_implementation
                    loaded = loaded.cuda()  # the device patch: the target device
                    with torch.no_grad():
                        logits = loaded(pixel_values=pixels.cuda()).logits.cpu()
                    diff = (logits - expected).abs().max().item()
                    patched = sorted({r.target.rsplit(".", 1)[-1] for r in
                                      ascend_patch.report(internal=True).filter(patch="mobilevit", action="patched")})
                    if device not in out:
                        ok = attn == "eager" and diff == 0.0
                        out[device] = "works" if ok else f"wrong: attn={attn!r}, max diff {diff:.2e}"
                    out[f"{device}_diff"] = diff
                    if device == "cpu":
                        try:
                            load_flash()
                            out["flash"] = "works"
                        except Exception as exc:
                            out["flash"] = f"raises: {_short(exc)}"
                    out["patched"] = patched
            except Exception as exc:  # the patch itself failed to apply
                out[device] = f"raises: {_short(exc)}"
    return out


# -- the driver (creates the venvs, runs the probe in each) -------------------------------------------


def _site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip())


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True)


def create(root: Path, version: str, interpreter: str) -> Path:
    base = root / "base"
    if not (base / "bin" / "python").exists():
        subprocess.run([interpreter, "-m", "venv", str(base)], check=True)
        _pip(base / "bin" / "python", "torch==2.13.0")  # first, pinned: never a CUDA build
        _pip(base / "bin" / "python", *BASE_PACKAGES)
    venv = root / version
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
        (_site_packages(python) / "zz_ascend_patch_base.pth").write_text(
            f"{REPO}\n{_site_packages(base / 'bin' / 'python')}\n")
        _pip(python, f"transformers=={version}.*")
    return python


def measure(python: Path | str, timeout: float) -> dict[str, object]:
    env = dict(os.environ, ASCEND_PATCH_LOG="summary", PYTHONPATH=str(REPO))
    try:
        done = subprocess.run([str(python), __file__, "--probe"], check=False, capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"unpatched": "-", "cpu": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"unpatched": "-", "cpu": f"probe failed: {tail[:120]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "tfv",
                        help="folder of the scratch venvs, one per version (default: %(default)s)")
    parser.add_argument("--versions", nargs="*", default=list(VERSIONS), help="transformers minors (4.45 ...)")
    parser.add_argument("--create", action="store_true", help="create missing venvs (needs the package registry)")
    parser.add_argument("--current", action="store_true", help="also measure this interpreter's transformers")
    parser.add_argument("--python", default="python3.11", help="interpreter new venvs are made with")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe()))
        return

    jobs: list[tuple[str, Path | str]] = []
    for version in args.versions:
        python = args.root / version / "bin" / "python"
        if args.create:
            python = create(args.root, version, args.python)
        if python.exists():
            jobs.append((version, python))
        else:
            print(f"{version}: no venv at {python.parent.parent} (run with --create)", file=sys.stderr)
    if args.current:
        jobs.append(("current", sys.executable))

    rows = []
    print("| transformers | unpatched `sdpa` | recipe, cpu | recipe, sim | max diff vs eager "
          "| recipe, `flash_attention_2` | target patched |")
    print("|---|---|---|---|---:|---|---|")
    for _, python in jobs:
        row = measure(python, args.timeout)
        rows.append(row)
        diff = max((row[k] for k in ("cpu_diff", "sim_diff") if k in row), default=None)
        flash = str(row.get("flash", "-")) + (" (also `use_flash_attention_2=True`)" if row.get("flash_flag") else "")
        print(f"| {row.get('transformers', '?')} | {row.get('unpatched', '-')} | {row.get('cpu', '-')} "
              f"| {row.get('sim', '-')} | {'-' if diff is None else f'{diff:.1e}'} | {flash} "
              f"| {', '.join(f'`{t}`' for t in row.get('patched', [])) or '-'} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
