"""A PRM adapter's backbone on a vLLM pooling engine: ``{"type": "vllm", "adapter": "value_head", ...}``.

Every model-backed adapter splits into ``encode`` (token ids and read-out positions),
``features`` (one vector per token) and ``head`` (read at the read-out positions). Here
``features`` comes from ``vllm.LLM(runner="pooling")`` with pooling "ALL" and
``use_activation=False`` (without it vLLM L2-normalises hidden states and softmaxes logits):

- the value-head, Llemma, step-tag and self-score adapters take the final hidden states
  (``token_embed``) and apply the project's own heads;
- the classification adapter (Qwen2.5-Math-PRM, ``Qwen2ForProcessRewardModel``, which vLLM
  serves natively) takes the token classifier's logits (``token_classify``) and applies its softmax.

``encode``, ``head``, ``finalize`` and the batch scorer (dedup, prefix cache, ledger) stay the
adapter's, so the scores are the transformers adapters' (the tests check 1e-3 in fp32).

The adapter is built with transformers first (for its heads, tokenizer and parameter count, on
the CPU); then its backbone's weights are dropped (``drop_backbone_weights``) before the engine
loads its own copy, so host memory holds the checkpoint once at a time, not twice.
"""
from __future__ import annotations

from typing import Any

import torch

from .registry import load_prm, register_prm

#: Adapter -> the vLLM pooling task whose per-token outputs are its ``features``.
POOLING_TASKS = {**dict.fromkeys(("value_head", "llemma", "step_tag", "self_score"), "token_embed"),
                 **dict.fromkeys(("classification", "qwen_prm"), "token_classify")}
#: Files in a PRM directory that hold the project's heads, not the backbone's weights.
HEAD_FILES = ("value_head.safetensors",)
ENGINE_KEYS = ("gpu_memory_utilization", "tensor_parallel_size", "max_model_len", "enforce_eager", "engine_args")


class TokenOutputs:
    """A ``features(input_ids, attention_mask, position_ids)`` whose per-token outputs come row by row from
    an engine or a server (``row_outputs``): each row's real tokens go out, a [len(row), D] tensor per row
    comes back and is laid out as the scorer's [B, T, D]. Shared by this backend and :mod:`reward_models.served`."""

    def row_outputs(self, rows: list[list[int]]) -> list[torch.Tensor]:
        raise NotImplementedError

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 position_ids: torch.Tensor) -> torch.Tensor:
        # Each row's real tokens: the mask's ones; with no mask (right padding of a causal model)
        # the whole row, whose pad tail cannot change the positions before it.
        keep = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        rows = [input_ids[b][keep[b]].tolist() for b in range(input_ids.shape[0])]
        outs = self.row_outputs(rows)
        if len(outs) != len(rows):
            raise ValueError(f"{type(self).__name__}: {len(outs)} outputs for {len(rows)} rows")
        width, dtype = outs[0].shape[-1], outs[0].dtype
        feats = torch.zeros((*input_ids.shape, width), dtype=dtype)
        for b, (row, out) in enumerate(zip(rows, outs)):
            if tuple(out.shape) != (len(row), width):  # never a silently shifted or padded row
                raise ValueError(f"{type(self).__name__}: row {b} has outputs of shape {tuple(out.shape)}, "
                                 f"expected ({len(row)}, {width})")
            feats[b][keep[b]] = out.to(dtype)
        return feats.to(input_ids.device)


class VllmTokenOutputs(TokenOutputs):
    """Per-token outputs of a vLLM pooling ``task``: final hidden states (``token_embed``) or classifier
    logits (``token_classify``)."""

    def __init__(self, path: str, task: str, *, dtype: str = "float32", gpu_memory_utilization: float = 0.9,
                 tensor_parallel_size: int = 1, max_model_len: int | None = None, enforce_eager: bool = False,
                 trust_remote_code: bool = False, engine_args: dict[str, Any] | None = None):
        from vllm import LLM
        from vllm.config import PoolerConfig

        self.task = task
        self.llm = LLM(model=backbone_dir(path), tokenizer=path, runner="pooling", dtype=dtype,
                       gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                       max_model_len=max_model_len, enforce_eager=enforce_eager, trust_remote_code=trust_remote_code,
                       pooler_config=PoolerConfig(task=task, tok_pooling_type="ALL", use_activation=False),
                       enable_prefix_caching=False, **(engine_args or {}))

    def close(self) -> None:
        """Stop the engine now (its processes and memory)."""
        from treesearch.policy_vllm import shutdown_engine

        shutdown_engine(self.llm)

    def row_outputs(self, rows: list[list[int]]) -> list[torch.Tensor]:
        from vllm import PoolingParams

        outs = self.llm.encode([{"prompt_token_ids": r} for r in rows], pooling_task=self.task,
                               pooling_params=PoolingParams(use_activation=False), use_tqdm=False)
        return [out.outputs.data for out in outs]


def backbone_module(model: torch.nn.Module) -> torch.nn.Module:
    """The part of an adapter's model that vLLM runs: a value-head model's ``backbone``, a task model's
    ``base_model``, or the model itself (a bare ``AutoModel``, as the Llemma PRM loads apart from its head)."""
    return getattr(model, "backbone", None) or getattr(model, "base_model", None) or model


def drop_backbone_weights(model: torch.nn.Module) -> None:
    """Put the backbone's own parameters on the meta device (vLLM runs it); the heads keep theirs,
    a head tied to the input embedding included (each parameter is replaced, not changed in place)."""
    drop_weights(backbone_module(model))


def drop_weights(module: torch.nn.Module) -> None:
    """Put ``module``'s parameters on the meta device (each replaced, not changed in place)."""
    import gc

    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None and not p.is_meta:
                m._parameters[name] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
    gc.collect()


def backbone_dir(path: str) -> str:
    """``path``, or where it holds head files (vLLM would load every local ``*.safetensors`` as
    backbone weights), a temporary directory of links to everything else."""
    import os
    import tempfile

    names = os.listdir(path)
    if not any(n in HEAD_FILES for n in names):
        return path
    shadow = tempfile.mkdtemp(prefix="treesearch-vllm-prm-")
    for n in names:
        if n not in HEAD_FILES:
            os.symlink(os.path.abspath(os.path.join(path, n)), os.path.join(shadow, n))
    return shadow


def _vllm(adapter: str, path: str, **kwargs: Any):
    """The ``adapter`` PRM (its own options in ``kwargs``) with its backbone on a vLLM engine."""
    _check(adapter)
    engine = {k: kwargs.pop(k) for k in ENGINE_KEYS if k in kwargs}
    dtype = kwargs.get("dtype", "float32")
    prm = adapter_without_backbone(adapter, path, kwargs)
    if engine.get("max_model_len"):  # the engine refuses longer prompts: refuse them first, naming the PRM
        prm.context_limit = min(engine["max_model_len"], prm.context_limit or engine["max_model_len"])
    prm.features = VllmTokenOutputs(path, POOLING_TASKS[adapter], dtype=dtype,
                                    trust_remote_code=kwargs.get("trust_remote_code", False), **engine)
    return prm


def adapter_without_backbone(adapter: str, path: str, options: dict[str, Any]):
    """The ``adapter`` PRM built with transformers on the CPU (heads, tokenizer, parameter count), its
    backbone's weights dropped: whoever sets its ``features`` (an engine, a server) runs the backbone. The
    engine takes token ids, not a KV cache, so every chain is read in full (incremental scoring off)."""
    prm = load_prm(adapter, path=path, **{**options, "device": "cpu", "incremental": False})
    drop_backbone_weights(prm.model)
    return prm


def check_adapter(adapter: str | None, prm_type: str, adapters=POOLING_TASKS) -> None:
    """ValueError unless ``adapter`` is one that PRM type ``prm_type`` runs."""
    if adapter not in adapters:
        raise ValueError(f"the {prm_type} PRM backend runs the adapters {sorted(adapters)}, not {adapter!r}")


def _check(adapter: str | None = None, **options: Any) -> None:
    """What ``treesearch check`` can tell before loading: the adapter is one this backend runs, and
    vLLM is installed."""
    import importlib.util

    from treesearch.policy_vllm import INSTALL

    check_adapter(adapter, "vllm")
    if importlib.util.find_spec("vllm") is None:
        raise ValueError(f"PRM type 'vllm' needs the 'vllm' package, which is not installed: {INSTALL}")


register_prm("vllm", check=_check)(_vllm)
