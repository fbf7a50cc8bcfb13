"""Name -> policy backend, so a config says ``backend: vllm`` and nothing else in a study changes.

A backend is a factory ``factory(spec: PolicySpec) -> Policy`` registered with the typed
dataclass of its own options (``register_policy("mine", options=MineOptions)``), or named by
import path (``backend: my_pkg.policy:factory``; a ``factory.options`` dataclass is used if
it has one, else the options stay a dict). What every backend shares (checkpoint, step
format, prompt, sampling temperature, FLOPs convention) is ``PolicySpec``; the per-step
token cap is not in it: it belongs to the search (``SearchLimits``) and comes with every
request (``ExpandRequest.max_new_tokens``).

Built in: ``transformers`` (the in-process decode loop, the CPU default), ``vllm`` (an
offline vLLM engine, for GPUs; needs ``pip install vllm``) and ``openai`` (a client of
OpenAI-compatible servers: ``vllm serve``, SGLang, TGI; needs ``pip install openai``).

The harness reads what it must know of a backend from its registration, never from its name:
whether it needs a local ``path``, whether it runs on this process's device, which legacy
config keys feed its options, which options only change speed (``RUNTIME`` field metadata:
a resumed run may change them), and an optional ``check(spec)`` that ``treesearch check``
runs before any model loads.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .config_mapping import from_plain
from .prompts import PromptFormat
from .protocols import Policy
from .registry import RUNTIME, Registry
from .step_format import StepFormat

DEFAULT_BACKEND = "transformers"


@dataclass(frozen=True)
class PolicySpec:
    """What any backend needs to build a policy; ``options`` is the backend's own dataclass."""

    path: str | None = None
    step_format: StepFormat = field(default_factory=lambda: StepFormat.preset("paper"))
    prompt: PromptFormat = field(default_factory=PromptFormat)
    temperature: float = 1.0
    top_p: float = 1.0
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    num_parameters: int | None = None  # overrides the count read from the model
    parameter_count: str = "non_embedding"
    options: Any = None


@dataclass(frozen=True)
class Backend:
    factory: Callable[[PolicySpec], Policy]
    options: type | None = None  # the options dataclass; None: options stay a dict
    requires: str | None = None  # a module that must import, e.g. "vllm"
    install: str = ""  # how to get it, for the one-line error
    needs_path: bool = False  # a local checkpoint directory is required (the checks refuse a config without one)
    local_device: bool = False  # runs on this process's device: "auto"/"cuda:+k" become the shard's GPU
    config_keys: tuple[str, ...] = ()  # policy config fields that feed its options (kept for older configs)
    check: Callable[[PolicySpec], None] | None = None  # raises ValueError on what it can tell before loading


def _imported(obj: Any) -> Backend:
    """An import path names a ``Backend`` or a factory (its ``options`` attribute, if any, types its options)."""
    return obj if isinstance(obj, Backend) else Backend(obj, getattr(obj, "options", None))


# Built-in backends: vllm and openai register on import of their modules; transformers is below.
_REGISTRY: Registry[Backend] = Registry(
    "policy backend", (f"{__package__}.policy_vllm", f"{__package__}.policy_openai"), _imported)


def register_policy(name: str, *, options: type | None = None, requires: str | None = None, install: str = "",
                    needs_path: bool = False, local_device: bool = False, config_keys: tuple[str, ...] = (),
                    check: Callable[[PolicySpec], None] | None = None,
                    overwrite: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: register ``factory(spec) -> Policy`` under ``name``, with its options dataclass and the facts
    the harness needs (see :class:`Backend`)."""

    def deco(factory: Callable) -> Callable:
        if options is not None and not dataclasses.is_dataclass(options):
            raise TypeError(f"options of backend {name!r} must be a dataclass, got {options!r}")
        _REGISTRY.add(name, Backend(factory, options, requires, install, needs_path, local_device, tuple(config_keys),
                                    check), overwrite=overwrite)
        return factory

    return deco


def runtime_options(name: str | Callable) -> set[str]:
    """The options of backend ``name`` that change speed, memory or where requests go, not what is sampled."""
    cls = backend(name).options
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("runtime")} if cls is not None else set()


def check_policy(name: str | Callable, spec: PolicySpec) -> None:
    """What ``treesearch check`` asks of a backend: installed, options valid, a path where one is needed, and the
    backend's own ``check`` (a server down, a key missing). ImportError or ValueError, one line."""
    b = backend(name)
    check_available(name)
    spec = dataclasses.replace(spec, options=parse_options(name, spec.options))
    if b.needs_path and not spec.path:
        raise ValueError(f"path: required for the {name} backend")
    if b.check is not None:
        b.check(spec)


def available_policies() -> list[str]:
    return _REGISTRY.names()


def backend(name: str | Callable) -> Backend:
    """The registered backend, or the factory an import path ``pkg.mod:factory`` names."""
    return _imported(name) if callable(name) else _REGISTRY.get(name)


def check_available(name: str | Callable) -> None:
    """Raise ``ImportError`` with one line saying how to install what backend ``name`` needs."""
    b = backend(name)
    if b.requires and importlib.util.find_spec(b.requires) is None:
        raise ImportError(f"policy backend {name!r} needs the {b.requires!r} package, which is not installed: "
                          f"{b.install or 'pip install ' + b.requires}")


def parse_options(name: str | Callable, options: Mapping[str, Any] | Any) -> Any:
    """A backend's options dataclass from a config mapping; unknown keys and wrong types fail by name
    (``options.KEY: why``), through the same mapping as the study config."""
    cls = backend(name).options
    if cls is None:
        return dict(options or {})
    if isinstance(options, cls):
        return options
    return from_plain(cls, dict(options or {}), "options", "")


NEEDS_PARAMETERS = ("num_parameters: required for the {backend} backend when no local model path is given "
                    "(paper FLOPs are 2 * N * generated tokens)")


def parameters_of(spec: PolicySpec, backend: str) -> int:
    """N for a backend that holds no model of its own: ``spec.num_parameters``, else counted under the spec's
    convention on a weightless (meta-device) copy of the checkpoint at ``spec.path``."""
    if spec.num_parameters is not None:
        return spec.num_parameters
    if not spec.path:
        raise ValueError(NEEDS_PARAMETERS.format(backend=backend))
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .ledger import count_parameters

    cfg = AutoConfig.from_pretrained(spec.path, trust_remote_code=spec.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=spec.trust_remote_code)
    return count_parameters(model, spec.parameter_count)


def load_policy(name: str | Callable, spec: PolicySpec) -> Policy:
    """Build the policy ``spec`` describes with backend ``name`` (``spec.options`` may be a mapping)."""
    b = backend(name)
    check_available(name)
    spec = dataclasses.replace(spec, options=parse_options(name, spec.options))
    policy = b.factory(spec)
    if not isinstance(policy, Policy):
        raise TypeError(f"policy backend {name!r} returned {type(policy).__name__}, which lacks the Policy "
                        f"protocol (step_format, num_parameters, encode_prompt, expand)")
    return policy


@dataclass(frozen=True)
class TransformersOptions:
    """The in-process decode loop's own settings (``TransformersPolicy``)."""

    reuse_kv: bool = True  # keep each sampled step's KV for its children
    max_batch_rows: int = field(default=64, metadata=RUNTIME)  # sample rows per decode batch
    kv_cache_bytes: int = field(default=2 * 1024**3, metadata=RUNTIME)  # bound of the prefix KV store

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1 or self.kv_cache_bytes < 0:
            raise ValueError(f"need max_batch_rows >= 1 and kv_cache_bytes >= 0, got {self}")


@register_policy(DEFAULT_BACKEND, options=TransformersOptions, needs_path=True, local_device=True,
                 config_keys=("reuse_kv", "max_batch_rows"))
def transformers_policy(spec: PolicySpec) -> Policy:
    from .policy_hf import TransformersPolicy  # torch and transformers only when asked for

    if not spec.path:
        raise ValueError("the transformers backend needs a checkpoint directory (path)")
    o: TransformersOptions = spec.options
    return TransformersPolicy.from_pretrained(
        spec.path, device=spec.device, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code,
        step_format=spec.step_format, temperature=spec.temperature, top_p=spec.top_p,
        prompt=spec.prompt, reuse_kv=o.reuse_kv, max_batch_rows=o.max_batch_rows,
        kv_cache_bytes=o.kv_cache_bytes, num_parameters=spec.num_parameters, parameter_count=spec.parameter_count)
