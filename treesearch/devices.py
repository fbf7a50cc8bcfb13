"""Where a model runs and in which precision: one answer for policies, PRMs and the harness."""
from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0,
                   gpus_per_process: int = 1) -> torch.device:
    """This process's device for a configured one.

    "auto" (or None): its first GPU if there is one, else the CPU. "cuda": its first GPU.
    "cuda:+k": its k-th GPU (process r owns GPUs r*g .. r*g+g-1, g = ``gpus_per_process``), so a
    policy and a PRM can sit on two GPUs of each process. Anything else ("cpu", "cuda:3") as is.
    """
    if isinstance(device, torch.device):
        return device
    device = "auto" if device is None else str(device)
    if device not in ("auto", "cuda") and not device.startswith("cuda:+"):
        return torch.device(device)
    if not torch.cuda.is_available():
        if device == "auto":
            return torch.device("cpu")
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
    index = local_rank * gpus_per_process + (int(device[6:]) if device.startswith("cuda:+") else 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} of process {local_rank} is cuda:{index}, but only "
                         f"{torch.cuda.device_count()} GPUs are visible (gpus_per_process={gpus_per_process})")
    return torch.device(f"cuda:{index}")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """"auto": bf16 on a GPU that has it, else fp16 on GPU; fp32 on CPU (exact, and fast enough)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return DTYPES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)} or 'auto'") from None
