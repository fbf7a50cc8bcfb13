"""Study configs: YAML onto dataclasses, errors that name the key and the file, resume safety."""
from pathlib import Path

import pytest
import yaml

from experiments.config import (ConfigError, MethodConfig, PolicyConfig, StudyConfig, config_from_dict,
                                config_to_dict, dump_config, incompatible_keys, load_config, validate)

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"

BASE = {
    "policies": [{"name": "p", "path": "/models/p"}],
    "methods": [{"name": "sampling", "algorithm": "sampling", "budgets": [1, 2, 4], "subsample": True}],
    "dataset": {"name": "math500"},
}


def _with(path: str, value, base=BASE) -> dict:
    """A deep copy of ``base`` with the dotted ``path`` set (list indices as integers)."""
    data = yaml.safe_load(yaml.safe_dump(base))
    node, keys = data, [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node.setdefault(k, {}) if isinstance(node, dict) else node[k]
    node[keys[-1]] = value
    return data


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["llemma_math500.yaml", "llemma_gsm8k.yaml", "tiny_smoke.yaml",
                                  "smollm2_budget_forcing.yaml", "llemma_math500_served.yaml",
                                  "smollm2_revisions.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.methods and cfg.policies


def test_the_smollm2_revisions_config_runs_every_ratio_with_its_own_request():
    cfg = load_config(CONFIGS / "smollm2_revisions.yaml")
    assert cfg.policies[0].revision_prompt.startswith("Your solution above may contain mistakes")
    assert cfg.policies[0].chat_template
    assert sorted((m.budgets[0] // m.params["chains"]) for m in cfg.methods) == [1, 2, 4]


def test_the_served_llemma_config_is_the_same_study_with_the_models_on_servers():
    local, served = (config_to_dict(load_config(CONFIGS / n)) for n in ("llemma_math500.yaml",
                                                                         "llemma_math500_served.yaml"))
    assert [p["backend"] for p in served["policies"]] == ["openai", "openai"]
    assert served["prm"]["type"] == "vllm_server" and served["prm"]["adapter"] == local["prm"]["type"]
    for cfg in (local, served):
        for key in ("description", "output", "gpus_per_process", "prm"):
            cfg.pop(key)
        for p in cfg["policies"]:
            p.pop("backend"), p.pop("options")
    assert served == local


def test_llemma_config_has_the_papers_settings():
    cfg = load_config(CONFIGS / "llemma_math500.yaml")
    # The paper's N is the total count (6.74e9 / 33.7e9), read from the checkpoints.
    assert all(p.parameter_count == "total" and p.num_parameters is None for p in cfg.policies)
    assert all(p.temperature == 1.0 and p.step_format == "paper" and p.prompt_template == "{question}\n"
               and p.dtype == "bfloat16" for p in cfg.policies)
    assert (cfg.limits.max_step_tokens, cfg.limits.max_solution_tokens) == (256, 1024)
    methods = {m.name: m for m in cfg.methods}
    assert methods["sampling"].subsample and max(methods["sampling"].budgets) == 256
    assert methods["rebase"].params_for(64) == {"temperature": 0.1, "width": 64}
    assert [methods["mcts"].params_for(b)["root_width"] for b in (32, 64, 128)] == [4, 8, 16]
    assert cfg.prm.type == "llemma" and "weighted" in cfg.voting.rules and cfg.voting.aggregations[0] == "last"


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, _with("policies.0.temprature", 0.5))
    with pytest.raises(ConfigError, match=r"study\.yaml: policies\[0\]\.temprature: unknown key \(did you mean 'temperature'\?\)"):
        load_config(path)


@pytest.mark.parametrize("path,value,match", [
    ("methods.0.budgets", [1, "two"], r"methods\[0\]\.budgets\[1\]: expected an integer, got str"),
    ("policies.0.chat_template", "yes", r"policies\[0\]\.chat_template: expected true or false"),
    ("policies.0.temperature", "hot", r"policies\[0\]\.temperature: expected a number"),
    ("seeds", 3, r"seeds: expected a list"),
    ("limits", {"max_step_tokens": 0}, r"limits: SearchLimits\.max_step_tokens must be >= 1"),
    ("methods.0.algorithm", "rebse", r"methods\[0\]\.algorithm: unknown search algorithm 'rebse'"),
    ("methods.0.subsample", True, None),
])
def test_wrong_types_and_values_name_the_key(tmp_path, path, value, match):
    data = _with(path, value)
    if match is None:
        config_from_dict(data)
        return
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, data))


def test_meaning_checks_name_the_key():
    with pytest.raises(ConfigError, match=r"policies\[0\]\.name: required key is missing"):
        config_from_dict(_with("policies", [{"path": "x"}]))
    rebase = {"name": "rebase", "algorithm": "rebase", "budgets": [4]}
    with pytest.raises(ConfigError, match=r"prm: method 'rebase' \(rebase\) searches with a PRM"):
        config_from_dict(_with("methods", [rebase]))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.subsample: only an algorithm with independent samples"):
        config_from_dict(_with("methods", [{**rebase, "subsample": True}], _with("prm", {"type": "llemma"})))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.params\.n: set by the budget"):
        config_from_dict(_with("methods.0.params", {"n": 3}))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.params\.widht: unknown key"):
        config_from_dict(_with("methods.0.params", {"widht": 3}))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.params\.temperature: expected a number, got str"):
        config_from_dict(_with("methods", [{"name": "r", "algorithm": "rebase", "budgets": [4],
                                            "params": {"temperature": "hot"}}], _with("prm", {"type": "llemma"})))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.budgets: greedy has no budget parameter"):
        config_from_dict(_with("methods", [{"name": "g", "algorithm": "greedy", "budgets": [4]}]))
    with pytest.raises(ConfigError, match=r"policies\[1\]\.name: duplicate name 'p'"):
        config_from_dict(_with("policies", BASE["policies"] * 2))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.model_budgets\.q: no policy named 'q'"):
        config_from_dict(_with("methods.0.model_budgets", {"q": [1]}))
    with pytest.raises(ConfigError, match=r"policies\[0\]\.device: 'cuda:\+1'"):
        config_from_dict(_with("policies.0.device", "cuda:+1"))


def test_yaml_float_gotcha_and_python_construction():
    cfg = config_from_dict(_with("policies.0.num_parameters", "6.74e9"))  # PyYAML reads 6.74e9 as a string
    assert cfg.policies[0].num_parameters == 6.74e9
    py = StudyConfig(policies=[PolicyConfig("p", path="/models/p", num_parameters=6.74e9)],
                     methods=[MethodConfig("sampling", "sampling", budgets=[1, 2, 4], subsample=True)])
    validate(py)
    assert config_to_dict(py) == config_to_dict(cfg)


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(CONFIGS / "llemma_math500.yaml")
    dump_config(cfg, tmp_path / "resolved.yaml")
    assert config_to_dict(load_config(tmp_path / "resolved.yaml")) == config_to_dict(cfg)


def test_incompatible_keys_ignore_runtime_settings():
    old = config_to_dict(config_from_dict(BASE))
    grown = _with("methods.0.budgets", [1, 2, 4, 8], _with("seeds", [0, 1], _with("dataset.limit", 10, BASE)))
    assert incompatible_keys(old, config_to_dict(config_from_dict(grown))) == []
    changed = _with("policies.0.temperature", 0.7, _with("limits.max_step_tokens", 64, BASE))
    assert incompatible_keys(old, config_to_dict(config_from_dict(changed))) == [
        "limits.max_step_tokens", "policies[p].temperature"]


def test_parameter_count_convention_reaches_the_ledger_and_the_table(model, tokenizer):
    from experiments.analysis import parameter_conventions
    from experiments.report import format_table
    from treesearch.ledger import non_embedding_parameters, total_parameters
    from treesearch.policy_hf import TransformersPolicy

    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert total_parameters(model) == total
    emb = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight
    tied = head.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert non_embedding_parameters(model) == total - emb - (0 if tied else head.numel())
    assert TransformersPolicy(model, tokenizer, parameter_count="total").num_parameters == total
    assert TransformersPolicy(model, tokenizer).num_parameters == non_embedding_parameters(model)
    from experiments.records import Record

    def rec(model, **kw):
        return Record(problem_id="q", model=model, method="greedy", budget=1, seed=0, **kw)

    records = [rec("a", parameter_count="total"), rec("b", parameter_count="total")]
    assert parameter_conventions(records) == "N = total parameters"
    mixed = parameter_conventions(records + [rec("c")])
    assert mixed == "N = a: total parameters; b: total parameters; c: non-embedding parameters"
    assert "(N = total parameters)" in format_table([], "N = total parameters")


def test_unknown_parameter_count_is_rejected(tmp_path):
    path = _write(tmp_path, _with("policies.0.parameter_count", "embedding"))
    with pytest.raises(ConfigError, match=r"policies\[0\]\.parameter_count: unknown convention 'embedding'"):
        load_config(path)


class Undeclared:
    """An algorithm class that does not say what its budget sets."""

    def __init__(self, n: int = 1):
        self.n = n


class Searching:
    """Declares that it scores with a PRM while searching; its budget sets ``rounds``."""

    budget_param = "rounds"
    needs_prm = True

    def __init__(self, rounds: int = 1, spread: float = 1.0):
        if spread <= 0:
            raise ValueError("spread must be > 0")
        self.rounds, self.spread = rounds, spread


def test_algorithms_by_import_path_declare_what_they_need():
    mine = {"name": "mine", "algorithm": "test_config:Searching", "budgets": [2, 4]}
    cfg = config_from_dict(_with("methods", [mine], _with("prm", {"type": "llemma"})))
    assert cfg.methods[0].budget_key == "rounds" and cfg.methods[0].params_for(4) == {"rounds": 4}
    with pytest.raises(ConfigError, match=r"prm: method 'mine' \(test_config:Searching\) searches with a PRM"):
        config_from_dict(_with("methods", [mine]))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.params: spread must be > 0"):
        config_from_dict(_with("methods", [{**mine, "params": {"spread": 0}}], _with("prm", {"type": "llemma"})))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.budget_param: test_config:Searching has no parameter 'n'"):
        config_from_dict(_with("methods", [{**mine, "budget_param": "n"}], _with("prm", {"type": "llemma"})))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.subsample: only an algorithm with independent samples"):
        config_from_dict(_with("methods", [{**mine, "subsample": True}], _with("prm", {"type": "llemma"})))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.algorithm: 'test_config:Undeclared' does not declare "
                                          r"budget_param and needs_prm"):
        config_from_dict(_with("methods", [{**mine, "algorithm": "test_config:Undeclared"}]))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.algorithm: cannot import 'no_such_pkg.mod'"):
        config_from_dict(_with("methods", [{**mine, "algorithm": "no_such_pkg.mod:Search"}]))


def test_a_key_added_since_a_run_was_written_does_not_block_its_resume(tmp_path):
    """resolved.yaml files written before a key existed (here ``revision_prompt``) resume: read through
    today's schema, the key is at its default; a changed value is still a change."""
    from experiments.sweep import _as_written_now

    new = config_to_dict(config_from_dict(BASE))
    old = yaml.safe_load(yaml.safe_dump(new))
    del old["policies"][0]["revision_prompt"]
    assert incompatible_keys(old, new) == ["policies[p].revision_prompt"]  # the raw file differs
    assert incompatible_keys(_as_written_now(old, tmp_path / "resolved.yaml"), new) == []
    changed = _with("policies.0.revision_prompt", "Again:\n", old)
    assert incompatible_keys(_as_written_now(changed, tmp_path / "resolved.yaml"), new) == [
        "policies[p].revision_prompt"]
    assert _as_written_now({"no_such_key": 1}, tmp_path / "r.yaml") == {"no_such_key": 1}
