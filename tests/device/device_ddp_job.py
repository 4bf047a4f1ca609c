"""A 2-process data-parallel job written for CUDA/NCCL, run unmodified under ascend_patch.

Launched by test_distributed.py like torchrun would (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_*
in the environment). Prints one JSON line with what the test checks. Not a test module itself.
"""

from __future__ import annotations

import datetime
import json
import os
import sys

import ascend_patch

ascend_patch.apply("device", "distributed", device=os.environ.get("ASCEND_PATCH_TEST_DEVICE", "cpu"))

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def main() -> None:
    # --- the upstream script body, CUDA as written --------------------------------------------
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ["LOCAL_RANK"])
    assert dist.is_nccl_available()
    torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl",
        device_id=torch.device("cuda", local_rank),
        timeout=datetime.timedelta(seconds=60),
    )
    values = torch.tensor([rank + 1.0, 10.0 * (rank + 1)]).cuda()
    dist.all_reduce(values)

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).cuda(local_rank)
    ddp = DDP(model, device_ids=[local_rank], output_device=local_rank)
    x = torch.full((3, 4), float(rank + 1), device=f"cuda:{local_rank}")
    ddp(x).sum().backward()
    torch.cuda.synchronize()
    dist.barrier(device_ids=[local_rank])
    # -------------------------------------------------------------------------------------------
    print(
        json.dumps(
            {
                "rank": rank,
                "backend": dist.get_backend(),
                "all_reduce": values.tolist(),
                "device": str(values.device),
                "weight_grad": model.weight.grad.tolist(),
                "bias_grad": model.bias.grad.tolist(),
                "nccl_version": list(torch.cuda.nccl.version()),
            }
        )
    )
    sys.stdout.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
