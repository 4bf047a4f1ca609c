"""karpathy/nanoGPT: ``train.py`` run unmodified as a one-process torchrun job.

Patched: ``RANK``/``WORLD_SIZE`` set, so the script takes its DDP branch (``init_process_group("nccl")``,
``device = f"cuda:{local_rank}"``, ``torch.cuda.set_device``, DDP with ``device_ids``), pins and sends batches
to the device, builds ``torch.cuda.amp.GradScaler``, ``torch.compile``s the model and trains under
``torch.amp.autocast(device_type="cuda")``. Reference: the same script with ``--device=cpu --compile=False``
and no DDP (one process: DDP's average over one rank is the identity). Both seed with the script's own
``torch.manual_seed(1337)`` and draw batches from the CPU generator, so two AdamW steps must agree.
The patched process trains twice: with the script's default dtype (bf16 autocast, since CUDA "is available"),
whose final loss is held to the fp32 CPU loss at bf16 precision, then with ``--dtype=float32``, whose weights are
compared at the fp32 threshold.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .common import Context, Outputs, run_script, single_process_env

VOCAB = 64
ARGS = ["--dataset=corpus", "--batch_size=2", "--block_size=32", "--n_layer=2", "--n_head=2", "--n_embd=32",
        "--max_iters=2", "--eval_interval=2", "--eval_iters=1", "--log_interval=1", "--gradient_accumulation_steps=1",
        "--warmup_iters=1", "--lr_decay_iters=2", "--learning_rate=1e-3", "--out_dir=out",
        "--always_save_checkpoint=True", "--wandb_log=False"]
TOL = {"default": 1e-4, "bf16.loss": 3e-2}  # two steps under bf16 autocast vs fp32: bf16's ~3 significant digits


def _run_dir(ctx: Context, name: str) -> Path:
    """A folder laid out as train.py expects: ./configurator.py and ./data/<dataset>/{train,val}.bin, meta.pkl."""
    data = ctx.work / "data" / "corpus"
    if not data.exists():
        data.mkdir(parents=True)
        rng = np.random.RandomState(0)
        for split, n in (("train", 4096), ("val", 1024)):
            rng.randint(0, VOCAB, size=n).astype(np.uint16).tofile(data / f"{split}.bin")
        with open(data / "meta.pkl", "wb") as f:
            pickle.dump({"vocab_size": VOCAB}, f)
    run = ctx.work / name
    run.mkdir(exist_ok=True)
    for link, target in (("data", ctx.work / "data"), ("configurator.py", ctx.src / "configurator.py")):
        if not (run / link).exists():
            (run / link).symlink_to(target)
    return run


def _train(ctx: Context, run: str, extra: list[str]) -> Outputs:
    g = run_script(ctx.src / "train.py", ARGS + extra, _run_dir(ctx, run))
    # torch.compile wraps the module: its state_dict keys gain "_orig_mod."
    state = {k.removeprefix("_orig_mod."): v for k, v in g["raw_model"].state_dict().items()}
    return {**{f"weights.{k}": v for k, v in state.items()}, "loss": torch.tensor(g["lossf"])}


def reference(ctx: Context) -> Outputs:
    out = _train(ctx, "reference_run", ["--device=cpu", "--compile=False", "--dtype=float32"])
    return {**out, "bf16.loss": out["loss"]}  # the patched bf16 run's loss is held to the fp32 CPU loss


def patched(ctx: Context) -> Outputs:
    # The script's defaults: device="cuda", compile=True, backend="nccl", and dtype="bfloat16" because
    # torch.cuda.is_available() and is_bf16_supported(); then the same job in fp32 for the tight comparison.
    single_process_env()
    bf16 = _train(ctx, "patched_bf16_run", [])
    single_process_env()
    return {**_train(ctx, "patched_run", ["--dtype=float32"]), "bf16.loss": bf16["loss"]}
