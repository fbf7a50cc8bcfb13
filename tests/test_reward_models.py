"""PRM adapters on tiny random models of real architectures, loaded from disk like real checkpoints."""
from __future__ import annotations

import math
import re

import pytest
import torch

import reward_models as rm
from reward_models import Chain, ChainScores, ProcessRewardModel
from reward_models.base import Encoding, ModelPRM, encode_chain
from reward_models.testing import ARCHS, build_tokenizer, save_causal_lm, save_qwen2_process_reward_model
from support import KINDS
from treesearch.testing import tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")

# No chain is a prefix of another (prefix coverage is tested on its own).
# Steps with the tag's characters, the separator text, '+'/'-' and newlines inside them.
CHAINS = [
    Chain("What is 2+4?", ("Step 1: 2+4=6",)),
    Chain("What is 2+3?", ("Step 1: 2+3=5", "The answer is 5")),
    Chain("Compute 7-4.", ("Step 1: a ки b", "Step 2: + - ки", "x<extra_0>y", "Step 4:\nthe answer is 3")),
    Chain("Q", ("a", "b", "c", "d", "The answer is: 9 ки")),
    Chain("Compute 7-4.", ("Step 1: a ки b", "Step 2: + - ки!")),
    Chain("A much longer question to make padding matter: what is 12*12?", ("Step 1: 12*12=144\n", "")),
]


def _close(a: list[ChainScores], b: list[ChainScores], tol: float = 1e-5) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x.scores) == len(y.scores)
        for s, t in zip(x.scores, y.scores):
            assert abs(s - t) <= tol, (x.scores, y.scores)


# ---- protocol and shapes -------------------------------------------------------------------------

def test_reexports_core_protocol():
    from treesearch import protocols

    assert rm.ProcessRewardModel is protocols.ProcessRewardModel
    assert rm.Chain is protocols.Chain and rm.ChainScores is protocols.ChainScores


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", KINDS)
def test_one_score_per_step_batched_equals_single_and_padding_sides(make_prm, kind, arch):
    right = make_prm(kind, arch, cache=False, incremental=False, padding_side="right", max_batch_tokens=16384)
    left = make_prm(kind, arch, cache=False, incremental=False, padding_side="left", max_batch_tokens=16384)
    assert isinstance(right, ProcessRewardModel) and right.num_parameters > 0
    batched = right.score(CHAINS)
    assert right.scorer.stats.forward_calls == 1  # all six chains in one batch
    for c, r in zip(CHAINS, batched):
        assert len(r.scores) == len(c.steps)
        assert all(0.0 <= s <= 1.0 and not math.isnan(s) for s in r.scores)
        assert r.processed_tokens > 0
    single = [right.score([c])[0] for c in CHAINS]
    _close(batched, single)
    _close(batched, left.score(CHAINS))
    assert [r.processed_tokens for r in batched] == [r.processed_tokens for r in single]
    if kind == "outcome":  # documented: every step carries the chain's one score
        assert all(len(set(r.scores)) == 1 for r in batched)
    else:  # prefix scores are the chain's own step scores (causal models)
        _close([right.score([Chain(CHAINS[2].question, CHAINS[2].steps[:2])])[0]],
               [ChainScores(batched[2].scores[:2])])


def test_tiny_token_budget_packs_many_batches_with_same_scores(make_prm):
    assert make_prm("value_head").scorer.max_batch_tokens == 1024  # the CPU default
    big = make_prm("value_head", cache=False, max_batch_tokens=16384)
    small = make_prm("value_head", cache=False, max_batch_tokens=64, max_batch_size=2)
    _close(big.score(CHAINS), small.score(CHAINS))
    assert small.scorer.stats.forward_calls >= 3


# ---- exact read-out positions --------------------------------------------------------------------

def test_step_tag_scores_match_a_plain_forward_at_inserted_tags(make_prm, tok):
    prm = make_prm("step_tag", cache=False)
    chain = CHAINS[2]
    enc = prm.encode(chain)
    tag, good, bad = (tok.convert_tokens_to_ids(t) for t in ("ки", "+", "-"))
    # The step text itself contains the tag: more tag ids than steps, positions by construction.
    assert sum(i == tag for i in enc.input_ids) > len(chain.steps)
    assert [enc.input_ids[p[0]] for p in enc.readout] == [tag] * len(chain.steps)
    text = "Compute 7-4. Step 1: a ки b ки\nStep 2: + - ки ки\nx<extra_0>y ки\nStep 4:\nthe answer is 3 ки"
    assert list(enc.input_ids) == tok.encode(text)
    with torch.no_grad():
        logits = prm.model(torch.tensor([enc.input_ids])).logits[0]
    want = [torch.softmax(logits[p[0], [good, bad]], -1)[0].item() for p in enc.readout]
    _close(prm.score([chain]), [ChainScores(want)])


def test_llemma_two_row_head_is_read_from_the_checkpoint(make_prm, checkpoints, tok):
    prm = make_prm("llemma2", cache=False)
    assert prm.lm_head.weight.shape[0] == 2
    # The same weights, loaded as a full causal LM by hand, give the same sigmoid(mean) scores.
    state = {}
    from safetensors.torch import load_file
    state = load_file(f"{checkpoints('llemma2', 'llama')}/model.safetensors")
    chain = CHAINS[1]
    enc = prm.encode(chain)
    with torch.no_grad():
        h = prm.backbone(torch.tensor([enc.input_ids])).last_hidden_state[0]
        want = [torch.sigmoid((h[p[0]] @ state["lm_head.weight"].T).mean()).item() for p in enc.readout]
    _close(prm.score([chain]), [ChainScores(want)])


def test_classification_uses_chat_template_and_separator(make_prm, tok):
    prm = make_prm("classification", cache=False)
    chain = CHAINS[1]
    enc = prm.encode(chain)
    sep = tok.convert_tokens_to_ids("<extra_0>")
    text = ("<|system|>" + rm.classification.QWEN_PRM_SYSTEM + "\n<|user|>What is 2+3?\n<|assistant|>"
            "Step 1: 2+3=5<extra_0>The answer is 5<extra_0>")
    assert list(enc.input_ids) == tok.encode(text, add_special_tokens=False)
    assert [enc.input_ids[p[0]] for p in enc.readout] == [sep, sep]
    with torch.no_grad():
        logits = prm.model(torch.tensor([enc.input_ids])).logits[0]
    want = [torch.softmax(logits[p[0]], -1)[1].item() for p in enc.readout]
    _close(prm.score([chain]), [ChainScores(want)])


@pytest.mark.parametrize("kind", ["step_tag", "llemma", "llemma2", "value_head", "self_score", "classification",
                                  "step_tag tied", "self_score tied"])
def test_heads_score_without_the_backbones_weights(make_prm, kind, tok, tmp_path):
    """What the vllm PRM backend does: drop the backbone's weights (the engine holds its own) and feed
    the heads features computed elsewhere; the scores stay the same, heads tied to the input embedding
    included."""
    from reward_models.vllm_features import backbone_module, drop_backbone_weights

    kind, tied = kind.split()[0], kind.endswith("tied")
    if tied:
        path = save_causal_lm(str(tmp_path / "tied"), "llama", tok, seed=7, tie_word_embeddings=True)
        full, trimmed = (rm.load_prm(kind, path=path, dtype="float32", cache=False, incremental=False)
                         for _ in range(2))
        assert trimmed.model.get_output_embeddings().weight is trimmed.model.get_input_embeddings().weight
    else:
        full, trimmed = (make_prm(kind, cache=False, incremental=False) for _ in range(2))
    ref = full.score(CHAINS)
    drop_backbone_weights(trimmed.model)
    assert all(p.is_meta for p in backbone_module(trimmed.model).parameters())
    assert trimmed.num_parameters == full.num_parameters
    trimmed.features = full.features  # vLLM's place
    _close(trimmed.score(CHAINS), ref)


def test_qwen2_process_reward_model_layout_loads_as_remote_code(tmp_path, tok):
    """The Qwen2.5-Math-PRM layout (as vLLM serves it) loads through AutoModel + trust_remote_code,
    scores P(class 1) at each separator, and scores step by step as in one pass."""
    from reward_models.qwen2_prm_model import Qwen2ForProcessRewardModel

    path = save_qwen2_process_reward_model(str(tmp_path / "qwen_prm"), tok, seed=6)
    opts = dict(path=path, model_class="AutoModel", trust_remote_code=True, tokenizer=tok, dtype="float32")
    prm = rm.load_prm("qwen_prm", cache=False, incremental=False, **opts)
    assert type(prm.model).__name__ == "Qwen2ForProcessRewardModel"
    assert type(prm.model) is not Qwen2ForProcessRewardModel  # the checkpoint's own copy of the code ran
    chain = CHAINS[2]
    enc = prm.encode(chain)
    with torch.no_grad():
        logits = prm.model(input_ids=torch.tensor([enc.input_ids]))[0][0]
    want = ChainScores([torch.softmax(logits[p[0]], -1)[1].item() for p in enc.readout])
    _close(prm.score([chain]), [want])
    assert len({round(s, 3) for s in want.scores}) > 1
    stepwise = rm.load_prm("qwen_prm", cache=False, incremental=True, **opts)
    for k in range(1, len(chain.steps) + 1):
        got = stepwise.score([Chain(chain.question, chain.steps[:k])])
        _close(got, [ChainScores(want.scores[:k])])


def test_self_score_is_geometric_mean_token_probability(make_prm, tok):
    prm = make_prm("self_score", cache=False)
    chain = Chain("Q", ("ab", "c"))
    ids = tok.encode("Q\nab\nc\n")
    with torch.no_grad():
        logp = torch.log_softmax(prm.model(torch.tensor([ids])).logits[0], -1)
    lp = [logp[t - 1, ids[t]].item() for t in range(len(ids))[1:]]
    # ids: <s> Q \n a b \n c \n  -> step 1 = tokens 3..5, step 2 = tokens 6..7
    want = [math.exp(sum(lp[2:5]) / 3), math.exp(sum(lp[5:7]) / 2)]
    _close(prm.score([chain]), [ChainScores(want)])


# ---- cache, dedup, backoff -----------------------------------------------------------------------

def _count_forwards(prm: ModelPRM) -> list[int]:
    calls = [0]
    module = getattr(prm, "backbone", None) or getattr(prm.model, "backbone", None) or prm.model
    module.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_cache_hit_makes_no_model_call_and_fills_every_prefix(make_prm):
    prm = make_prm("step_tag")
    calls = _count_forwards(prm)
    full = Chain("Q", ("a", "b", "c"))
    first = prm.score([full])[0]
    assert calls[0] == 1 and first.processed_tokens > 0
    again = prm.score([full, Chain("Q", ("a",)), Chain("Q", ("a", "b"))])
    assert calls[0] == 1  # whole chain and both prefixes served from the cache
    assert [r.processed_tokens for r in again] == [0, 0, 0]
    assert again[0].scores == first.scores and again[2].scores == first.scores[:2]
    ext = prm.score([Chain("Q", ("a", "b", "x"))])[0]
    assert calls[0] == 2 and ext.scores[:2] == first.scores[:2] and ext.processed_tokens > 0
    assert prm.scorer.stats.served_from_cache == 3


def test_duplicates_and_prefixes_in_one_request_run_once(make_prm):
    prm = make_prm("value_head", cache=False)
    calls = _count_forwards(prm)
    a = Chain("Q", ("a", "b", "c"))
    out = prm.score([a, a, Chain("Q", ("a", "b")), Chain("R", ("a",))])
    assert calls[0] == 1 and prm.scorer.stats.chains_run == 2
    assert out[0].scores == out[1].scores and out[2].scores == out[0].scores[:2]
    assert out[0].processed_tokens > 0 and out[1].processed_tokens == 0 and out[2].processed_tokens == 0


def test_outcome_rm_never_fills_prefixes(make_prm):
    orm = make_prm("outcome", incremental=False)  # one forward pass: no question-first split
    calls = _count_forwards(orm)
    long, short = Chain("Q", ("a", "b")), Chain("Q", ("a",))
    orm.score([long, short])
    assert calls[0] == 1 and orm.scorer.stats.chains_run == 2  # short is not covered by long
    orm.score([short])
    assert calls[0] == 1  # but whole chains are cached


class FakePRM(ModelPRM):
    """One-layer toy model that runs out of 'GPU memory' on batches of more than ``limit`` rows."""

    def __init__(self, limit: int, **kw):
        self.limit, self.tries, self.sizes = limit, 0, []
        self.emb = torch.nn.Embedding(300, 4)
        torch.nn.init.normal_(self.emb.weight, generator=torch.Generator().manual_seed(0))
        super().__init__(**kw)

    def encode(self, chain):
        ids = [ord(ch) % 300 for ch in chain.question]
        pos = []
        for s in chain.steps:
            ids.extend(ord(ch) % 300 for ch in s + ";")
            pos.append((len(ids) - 1,))
        return Encoding(tuple(ids), tuple(pos))

    def features(self, input_ids, attention_mask, position_ids):
        self.tries += 1
        self.sizes.append(input_ids.shape[0])
        if input_ids.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return self.emb(input_ids).cumsum(1)

    def head(self, feats, next_ids):
        return feats.sum(-1)

    def finalize(self, v):
        return torch.sigmoid(v)


def test_out_of_memory_halves_the_batch_and_retries():
    chains = [Chain(f"q{i}", ("step one", "step two")) for i in range(8)]
    want = FakePRM(limit=100, cache=False).score(chains)
    prm = FakePRM(limit=2, cache=False)
    got = prm.score(chains)
    _close(got, want, tol=0)
    # [8] fails, [4] fails, then [2] [2], and the other [4] is split without trying (budget kept).
    assert prm.sizes == [8, 4, 2, 2, 2, 2] and prm.tries == 6
    assert prm.scorer.stats.oom_retries == 2 and prm.scorer.stats.forward_calls == 4
    prm.tries = 0
    prm.score([Chain(f"r{i}", ("step one", "step two")) for i in range(8)])
    assert prm.tries == 4  # the lowered budget is kept: no failing try the second time


def test_out_of_memory_on_a_single_chain_reraises():
    prm = FakePRM(limit=0, cache=False)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        prm.score([Chain("q", ("a",)), Chain("r", ("b",))])
    assert prm.sizes == [2, 1]


# ---- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,name", [({"tag": "xyz"}, "xyz"), ({"good": "++"}, "++"), ({"bad": "minus"}, "minus")])
def test_wrong_tag_configuration_names_the_string(make_prm, kw, name):
    with pytest.raises(ValueError, match=re.escape(f"'{name}' does not map to exactly one token")):
        make_prm("step_tag", **kw)


def test_wrong_separator_names_the_string(make_prm):
    with pytest.raises(ValueError, match="'<sep>'"):
        make_prm("classification", separator="<sep>")


def test_chain_without_steps_is_an_error(make_prm):
    prm = make_prm("step_tag")
    with pytest.raises(ValueError, match="no steps"):
        prm.score([Chain("Q", ())])
    with pytest.raises(ValueError, match="at least one step"):
        rm.CallablePRM(lambda q, s: []).score([Chain("Q", ())])
    with pytest.raises(ValueError, match="at least one step"):
        Encoding((1, 2), ())


def test_empty_step_without_mark_has_no_end_to_read(tok):
    from reward_models.base import PieceTokenizer

    with pytest.raises(ValueError, match="no tokens"):
        encode_chain(PieceTokenizer(tok), "Q", ["a", ""], readout="last", step_suffix="")


# ---- callable, registry, value-head files ------------------------------------------------------------

def test_callable_prm_in_a_few_lines():
    prm = rm.CallablePRM(lambda question, steps: [1.0 if "=" in s else 0.5 for s in steps])
    out = prm.score([Chain("Q", ("1+1=2", "so"))])
    assert out == [ChainScores([1.0, 0.5], 0)] and prm.num_parameters == 0
    with pytest.raises(ValueError, match="returned 1 scores for 2 steps"):
        rm.CallablePRM(lambda q, s: [0.1]).score([Chain("Q", ("a", "b"))])


def test_registry_names_configs_and_custom_prms(checkpoints, tok):
    path = checkpoints("value_head", "llama")
    a = rm.load_prm({"type": "value_head", "path": path, "dtype": "float32"})
    b = rm.load_prm("value_head", path=path)
    assert isinstance(a, rm.ValueHeadPRM)
    _close(a.score(CHAINS[:2]), b.score(CHAINS[:2]))

    @rm.register_prm("test_constant")
    def constant(value: float = 0.25):
        return rm.CallablePRM(lambda q, steps: [value] * len(steps))

    assert rm.load_prm({"type": "test_constant", "value": 0.5}).score([Chain("Q", ("a",))])[0].scores == [0.5]
    assert "test_constant" in rm.available_prms()
    by_path = rm.load_prm({"type": "callable", "fn": "reward_models.testing:step_length_scorer"})
    assert by_path.score([Chain("Q", ("abc",))])[0].scores == [0.25]
    with pytest.raises(ValueError, match="unknown PRM type 'nope'"):
        rm.load_prm("nope")
    with pytest.raises(ValueError, match="already registered"):
        rm.register_prm("value_head")(constant)


def test_value_head_round_trip(tmp_path, checkpoints):
    prm = rm.ValueHeadPRM(checkpoints("value_head", "mistral"), dtype="float32")
    prm.model.save(str(tmp_path / "copy"), prm.tok.tokenizer, prm.fmt)
    files = {p.name for p in tmp_path.joinpath("copy").iterdir()}
    assert {"config.json", "model.safetensors", "value_head.safetensors", "value_head_config.json"} <= files
    again = rm.ValueHeadPRM(str(tmp_path / "copy"), dtype="float32")
    _close(prm.score(CHAINS), again.score(CHAINS), tol=0)
    with pytest.raises(FileNotFoundError, match="value_head_config.json"):
        rm.ValueHeadPRM(checkpoints("lm", "llama"))


def test_adapters_accept_built_models(tok):
    model = tiny_llama(len(tok), hidden=32)  # reward_models.testing.tiny_config("llama", tok)'s sizes
    prm = rm.StepTagPRM(model=model, tokenizer=tok)
    assert len(prm.score([CHAINS[3]])[0].scores) == 5
    tables = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()  # untied
    assert prm.num_parameters == sum(p.numel() for p in model.parameters()) - tables  # same N as the policy side


def test_sentencepiece_style_pieces_match_the_joint_tokenization(tmp_path):
    """Llama-2/Mistral-style tokenizers prepend "▁" per encode call; step pieces must not get it."""
    from reward_models.base import PieceTokenizer
    from reward_models.testing import build_sentencepiece_like_tokenizer

    sp = build_sentencepiece_like_tokenizer()
    assert PieceTokenizer(sp).anchor == "<s>" and PieceTokenizer(build_tokenizer()).anchor is None
    path = save_causal_lm(str(tmp_path / "sp"), "mistral", sp)
    prm = rm.StepTagPRM(path, tokenizer=sp, dtype="float32")
    assert sp.convert_ids_to_tokens([prm.tag_id, prm.good_id, prm.bad_id]) == ["ки", "▁+", "▁-"]  # as Math-Shepherd
    chain = Chain("What is 2+3?", ("Step 1: 2+3=5", "Step 2: 5*2=10", "The answer is: 10"))
    joint = sp.encode("What is 2+3? Step 1: 2+3=5 ки\nStep 2: 5*2=10 ки\nThe answer is: 10 ки")
    assert list(prm.encode(chain).input_ids) == joint
    assert len(prm.score([chain])[0].scores) == 3


def test_steps_keep_their_delimiters_without_a_mark_and_lose_them_before_a_tag(tok):
    from reward_models.base import PieceTokenizer

    t = PieceTokenizer(tok)
    steps = ["Para one.\n\n", "Para two"]
    enc = encode_chain(t, "Q", steps, readout="last", step_lead="\n", step_suffix="\n")
    assert tok.decode(enc.input_ids, skip_special_tokens=True) == "Q\nPara one.\n\nPara two\n"
    enc = encode_chain(t, "Q", steps, readout="span", step_suffix="")
    assert tok.decode(enc.input_ids, skip_special_tokens=True) == "QPara one.\n\nPara two"
    tag = t.single_token_id("ки", "tag")
    enc = encode_chain(t, "Q", steps, readout="mark", step_lead=" ", step_suffix=" ", mark_id=tag, mark_suffix="\n")
    assert tok.decode(enc.input_ids, skip_special_tokens=True) == "Q Para one. ки\nPara two ки"


def test_self_score_mirrors_the_policy_prompt(make_prm, tok):
    plain = make_prm("self_score", cache=False)
    chat = make_prm("self_score", cache=False, chat_template=True, system_prompt="Be brief.")
    chain = Chain("Q?", ("Step one.\n\n", "Step two.\n\n"))
    assert tok.decode(plain.encode(chain).input_ids) == "<s>Q?\nStep one.\n\nStep two.\n\n"
    assert tok.decode(chat.encode(chain).input_ids) == "<|system|>Be brief.\n<|user|>Q?\nStep one.\n\nStep two.\n\n"
    assert len(chat.score([chain])[0].scores) == 2


def test_check_names_a_bad_option_before_anything_loads():
    """Each registration's check types the options without building the PRM (no path needs to exist)."""
    from reward_models.registry import check_prm

    check_prm({"type": "value_head", "path": "/not/read", "max_batch_tokens": 512, "incremental": False})
    check_prm({"type": "noisy_oracle", "flip_rate": 0.3, "flip": "right"})
    for spec, message in [
        ({"type": "value_head", "max_batch_token": 5}, "max_batch_token: unknown option of ValueHeadPRM (did you mean"),
        ({"type": "step_tag", "incremental": "yes"}, "incremental: expected true or false, got str 'yes'"),
        ({"type": "likelihood", "prompt_templat": "{question}"}, "prompt_templat: unknown option of LikelihoodPRM"),
        ({"type": "noisy_oracle", "flip_rat": 0.3}, "flip_rat: unknown option of the checker PRMs (did you mean"),
        ({"type": "noisy_oracle", "flip": "left"}, "flip: one of both, right"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_prm(spec)
