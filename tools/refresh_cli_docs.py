"""Regenerate the example sessions in docs/cli.md by running their commands (real runs, simulated NPU).

Each example lives between ``<!-- begin: run NAME -->`` and ``<!-- end: run NAME -->`` and is
rewritten as a ``text`` block: ``$ COMMAND`` and what it printed (stdout and stderr). The commands run from
the project root in a fresh interpreter each, with no ``ASCEND_PATCH_*`` variable set; a tiny
random ViT saved with ``save_pretrained`` stands in for the user's Hugging Face folder
(``path/to/vit-tiny``). Timings in bench output are from whatever machine ran this.

    python tools/refresh_cli_docs.py              # all examples (a few minutes on 2 cores)
    python tools/refresh_cli_docs.py verify-mingtok bench-dinov2
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "cli.md"
FOLDER = "path/to/vit-tiny"  # how the scratch Hugging Face folder is shown

RUNS: dict[str, str] = {
    "verify-dinov2": "ascend-patch verify dinov2 --device sim --tiny --without gelu",
    "verify-folder": f"ascend-patch verify {FOLDER} --random-init --device sim --without gelu",
    "verify-factory": "ascend-patch verify --factory tests/fixtures/factories/cuda_vit.py:build --device sim "
                      "--without all gelu",
    "verify-mingtok": "ascend-patch verify mingtok --device sim --tiny --repo tests/fixtures/repos/Ming-UniVision "
                      "--without all mingtok",
    "verify-bf16": "ascend-patch verify dinov2 --device sim --tiny --dtype bf16",
    "bench-dinov2": "ascend-patch bench dinov2 --device sim --tiny --batch-sizes 1 2 4 --warmup 2 --iters 10",
    "bench-factory": "ascend-patch bench --factory tests/fixtures/factories/cuda_vit.py:build --device sim "
                     "--batch-sizes 1 8 --warmup 2 --iters 10",
    "run-script": "ascend-patch run --device sim --report tests/fixtures/migration_log/cuda_train.py",
}


def _hf_folder(scratch: Path) -> Path:
    code = (
        "import sys, torch, transformers as T\n"
        "c = T.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,"
        " image_size=32, patch_size=8, num_labels=10)\n"
        "c.architectures = ['ViTForImageClassification']\n"
        "c.save_pretrained(sys.argv[1])\n"
    )
    folder = scratch / "vit-tiny"
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)
    return folder


def run(command: str, scratch: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND_PATCH")}
    env.update(TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONPATH=str(ROOT))
    argv = shlex.split(command.replace(FOLDER, str(scratch / "vit-tiny")))
    while "=" in argv[0]:  # "VAR=value ascend-patch ...": the variable is set for the run
        key, _, value = argv.pop(0).partition("=")
        env[key] = value
    proc = subprocess.run([sys.executable, "-m", "ascend_patch", *argv[1:]], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)  # fmt: skip
    out = proc.stdout.replace(str(scratch), "path/to").replace(str(ROOT) + os.sep, "").rstrip()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{command}: exit {proc.returncode}\n{proc.stderr}")
    return f"```text\n$ {command}\n{out}\n```" + (f"\n(exit code {proc.returncode})" if proc.returncode else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="examples to rerun (default: all): " + ", ".join(RUNS))
    args = parser.parse_args()
    unknown = set(args.names) - set(RUNS)
    if unknown:
        parser.error(f"unknown example(s) {', '.join(sorted(unknown))}; known: {', '.join(RUNS)}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from refresh_docs import refreshed

    text = PAGE.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        _hf_folder(scratch)
        for name in args.names or RUNS:
            print(f"running {name}: {RUNS[name]}", file=sys.stderr)
            text = refreshed(text, f"run {name}", run(RUNS[name], scratch))
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
