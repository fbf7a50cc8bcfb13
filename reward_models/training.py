"""Training a value-head PRM with the Math-Shepherd recipe.

Two independent halves:

* :func:`monte_carlo_labels` makes the data: sample ``n_solutions`` per problem with a
  policy, then from every step of each solution roll out ``k_rollouts`` completions; a
  step's label is the fraction of its rollouts that reach the gold answer (soft) or
  whether any does (hard, Math-Shepherd's main setting). The last step's label is its own
  answer's correctness. It is written as a search algorithm (:class:`MonteCarloRollouts`)
  and run through the project's :class:`~treesearch.runner.Runner`, so the rollouts of many
  problems share batches and KV reuse like any search.
* :func:`train_value_head` fits ``sigmoid(head(h_step_end))`` to those labels with binary
  cross-entropy at step ends, for any transformers backbone; tqdm progress, periodic
  checkpoints, and resumption from the last checkpoint.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from treesearch.protocols import Chain

from .base import PieceTokenizer, resolve_device, resolve_tokenizer
from .value_head import ValueHeadFormat, ValueHeadModel, ValueHeadPRM, encode_value_head


@dataclass(frozen=True)
class LabelledChain:
    """A (partial) solution with one target in [0, 1] per step."""

    question: str
    steps: tuple[str, ...]
    labels: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "labels", tuple(float(x) for x in self.labels))
        if not self.steps:
            raise ValueError("a labelled chain needs at least one step")
        if len(self.steps) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels for {len(self.steps)} steps")
        if any(not 0.0 <= x <= 1.0 for x in self.labels):
            raise ValueError(f"labels must lie in [0, 1], got {self.labels}")


# ---- (b) Monte-Carlo labels through the Runner ------------------------------------------------

@dataclass(frozen=True)
class MonteCarloRollouts:
    """Search algorithm: n sampled solutions, then k completions from every non-final step.

    Returns the n solutions as candidates; the rollouts stay in the tree, as extra children
    of each step (every step node has at most one child on its own solution path).
    """

    n_solutions: int = 4
    k_rollouts: int = 4
    name: str = "monte_carlo_rollouts"

    def __post_init__(self) -> None:
        if self.n_solutions < 1 or self.k_rollouts < 1:
            raise ValueError("n_solutions and k_rollouts must be >= 1")

    def __call__(self, tree):
        from treesearch.work import complete, expand

        (first,) = yield from expand([tree.root], self.n_solutions)
        finals = yield from complete(first)
        steps = [n for f in finals for n in tree.path(f) if not n.terminal]
        kids = yield from expand(steps, self.k_rollouts)
        yield from complete([c for ks in kids for c in ks])
        return finals


def labels_from_tree(tree, solutions, is_correct: Callable[[str | None], bool],
                     hard: bool = False) -> list[LabelledChain]:
    """Step labels of each solution from the rollouts hanging off its path."""
    out = []
    for final in solutions:
        path = tree.path(final)
        labels = []
        for i, node in enumerate(path):
            if node.terminal:
                labels.append(float(is_correct(node.answer)))
                continue
            on_path = path[i + 1]
            results = [is_correct(_terminal_below(c).answer) for c in node.children if c is not on_path]
            if not results:
                raise RuntimeError(f"step node {node.id} has no rollouts")
            labels.append(float(any(results)) if hard else sum(results) / len(results))
        out.append(LabelledChain(tree.question, tuple(n.text for n in path), tuple(labels)))
    return out


def _terminal_below(node):
    while not node.terminal:
        if len(node.children) != 1:
            raise RuntimeError(f"rollout node {node.id} has {len(node.children)} children, expected 1")
        node = node.children[0]
    return node


def monte_carlo_labels(policy, problems: Sequence[Any], n_solutions: int, k_rollouts: int,
                       is_correct: Callable[[str | None, str], bool], *, hard: bool = False,
                       limits=None, seed: int = 0, progress: bool = True) -> list[LabelledChain]:
    """Math-Shepherd labels for ``n_solutions`` sampled solutions of each problem.

    ``problems``: ``(question, gold_answer)`` pairs or objects with ``.question`` and
    ``.answer``. ``is_correct(answer, gold)`` grades an answer (None = no answer = wrong).
    Cost: about n · (1 + k · steps) solution completions per problem.
    """
    from treesearch.runner import Runner, SearchLimits

    pairs = [(p.question, p.answer) if hasattr(p, "question") else tuple(p) for p in problems]
    runner = Runner(policy, prm=None, limits=limits or SearchLimits(), progress=progress)
    results = runner.run([q for q, _ in pairs], MonteCarloRollouts(n_solutions, k_rollouts), seed=seed)
    out: list[LabelledChain] = []
    for (_, gold), res in zip(pairs, results):
        finals = [res.tree.nodes[c.node_id] for c in res.candidates]
        out.extend(labels_from_tree(res.tree, finals, lambda a, g=gold: a is not None and bool(is_correct(a, g)),
                                    hard=hard))
    return out


# ---- (a) training -------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3
    head_lr: float | None = None  # default: lr
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_frac: float = 0.1  # cosine decay to this fraction of lr
    max_grad_norm: float = 1.0
    seed: int = 0
    train_backbone: bool = True  # False: a linear probe on frozen features
    device: str | None = "cpu"
    checkpoint_dir: str | None = None  # holds "last/" (model + trainer_state.pt)
    checkpoint_every: int = 200  # optimizer steps
    resume: bool = True
    max_steps: int | None = None  # stop (and checkpoint) after this many optimizer steps in total
    progress: bool = True
    extra: dict = field(default_factory=dict)


def _as_model(backbone_or_config, tokenizer, trust_remote_code: bool, seed: int):
    """A ValueHeadModel, the tokenizer, and a saved format (if any) from whatever was given."""
    from transformers import AutoModel, PretrainedConfig, PreTrainedModel

    fmt = None
    obj = backbone_or_config
    if isinstance(obj, ValueHeadModel):
        model = obj
    elif isinstance(obj, PretrainedConfig):
        model = ValueHeadModel.from_config(obj, seed=seed)
    elif isinstance(obj, PreTrainedModel):
        base = getattr(obj, "base_model", obj)
        torch.manual_seed(seed)
        model = ValueHeadModel(base)
    elif isinstance(obj, (str, os.PathLike)):
        path = str(obj)
        if os.path.exists(os.path.join(path, "value_head_config.json")):  # continue a value-head PRM
            model, fmt = ValueHeadModel.load(path, device="cpu", dtype="float32", trust_remote_code=trust_remote_code)
        else:
            torch.manual_seed(seed)
            model = ValueHeadModel(AutoModel.from_pretrained(path, dtype=torch.float32,
                                                             trust_remote_code=trust_remote_code))
        tokenizer = resolve_tokenizer(tokenizer, path, trust_remote_code)
    else:
        raise TypeError(f"train_value_head takes a ValueHeadModel, a transformers model, config or path; "
                        f"got {type(obj).__name__}")
    if tokenizer is None:
        raise ValueError("a tokenizer is needed (or give a checkpoint path that has one)")
    return model, resolve_tokenizer(tokenizer, None), fmt


def train_value_head(backbone_or_config, labelled_chains: Sequence[LabelledChain], tokenizer=None, *,
                     fmt: ValueHeadFormat | None = None, config: TrainConfig | None = None,
                     output_dir: str | None = None, trust_remote_code: bool = False,
                     **overrides) -> ValueHeadPRM:
    """Fit a value-head PRM to step labels with BCE at each step end; returns it ready to score.

    ``backbone_or_config``: a ``PretrainedConfig`` (random init, any architecture), a
    transformers model (its backbone is used), a ``ValueHeadModel``, or a path (a
    pretrained backbone, or a value-head PRM directory to continue training).
    ``overrides`` set fields of :class:`TrainConfig` (``epochs=2, lr=3e-4``...).
    With ``checkpoint_dir`` set, training saves every ``checkpoint_every`` steps and, on a
    rerun, resumes from the last checkpoint (same data order, same optimizer state).
    """
    from tqdm.auto import tqdm

    cfg = config or TrainConfig()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise TypeError(f"unknown training option {k!r}")
        setattr(cfg, k, v)
    if not labelled_chains:
        raise ValueError("no labelled chains to train on")
    model, tokenizer, saved_fmt = _as_model(backbone_or_config, tokenizer, trust_remote_code, cfg.seed)
    fmt = fmt or saved_fmt or ValueHeadFormat()
    device = resolve_device(cfg.device)
    model = model.to(device, torch.float32)

    tok = PieceTokenizer(tokenizer)
    data = [(encode_value_head(tok, fmt, Chain(c.question, c.steps)), c.labels) for c in labelled_chains]
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs

    for p in model.backbone.parameters():
        p.requires_grad_(cfg.train_backbone)
    groups = [{"params": list(model.value_head.parameters()), "lr": cfg.head_lr or cfg.lr}]
    if cfg.train_backbone:
        groups.append({"params": list(model.backbone.parameters()), "lr": cfg.lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)

    def lr_factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    step = 0
    last = os.path.join(cfg.checkpoint_dir, "last") if cfg.checkpoint_dir else None
    if last and cfg.resume and os.path.exists(os.path.join(last, "trainer_state.pt")):
        state = torch.load(os.path.join(last, "trainer_state.pt"), map_location=device, weights_only=False)
        loaded, _ = ValueHeadModel.load(last, device=device, dtype="float32", trust_remote_code=trust_remote_code)
        model.load_state_dict(loaded.state_dict())
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = state["step"]

    def save_checkpoint() -> None:
        tmp = last + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp, tokenizer, fmt)
        torch.save({"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "config": {k: v for k, v in vars(cfg).items() if k != "extra"}},
                   os.path.join(tmp, "trainer_state.pt"))
        shutil.rmtree(last, ignore_errors=True)
        os.replace(tmp, last)

    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    bar = tqdm(total=total, initial=step, disable=not cfg.progress, desc="value head", unit="step", leave=False)
    for epoch in range(step // steps_per_epoch, cfg.epochs):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()
        for b in range(step - epoch * steps_per_epoch, steps_per_epoch):
            batch = [data[i] for i in order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            ids, mask, rows, cols, targets = _collate(batch, tok.pad_token_id)
            ids, mask = ids.to(device), mask.to(device)
            # Right padding and a causal backbone: pads only follow real tokens, so no mask needed.
            logits = model(ids, attention_mask=None, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
            loss = loss_fn(logits[rows.to(device), cols.to(device)].float(), targets.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.max_grad_norm)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch)
            if last and step % cfg.checkpoint_every == 0:
                save_checkpoint()
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    bar.close()
    if last and step % cfg.checkpoint_every != 0:
        save_checkpoint()
    model.eval()
    if output_dir:
        model.save(output_dir, tokenizer, fmt)
    return ValueHeadPRM(model=model, tokenizer=tokenizer, fmt=fmt)


def _collate(batch, pad_id: int):
    width = max(len(e) for e, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    rows, cols, targets = [], [], []
    for r, (enc, labels) in enumerate(batch):
        ids[r, :len(enc)] = torch.tensor(enc.input_ids)
        mask[r, :len(enc)] = 1
        for pos, y in zip(enc.readout, labels):
            for p in pos:
                rows.append(r)
                cols.append(p)
                targets.append(y)
    return ids, mask, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets, dtype=torch.float32)


# ---- (c) a likelihood head ----------------------------------------------------------------------

def fit_likelihood_head(prm, labelled_chains: Sequence[LabelledChain], *, chain: str = "prod",
                        l2: float = 1e-3, max_iter: int = 200):
    """Fit a :class:`~reward_models.likelihood.LikelihoodPRM`'s head to step labels; returns the new head.

    The LM stays frozen: its step features (mean and minimum token log-probability) are
    computed once, then the three head parameters minimise the binary cross-entropy between
    the chained score (``chain``: running product / minimum of the local P(right), or none)
    and the labels, by L-BFGS. Labels are what the PRM should say of the prefix: exact
    "right so far" verdicts or Math-Shepherd's Monte-Carlo estimates.
    """
    from dataclasses import replace

    from .likelihood import CHAINS

    if chain not in CHAINS:
        raise ValueError(f"chain must be one of {CHAINS}, got {chain!r}")
    if not labelled_chains:
        raise ValueError("no labelled chains to fit on")
    feats = prm.scorer.step_values([Chain(c.question, c.steps) for c in labelled_chains])
    k = max(len(c.steps) for c in labelled_chains)
    x = torch.zeros(len(feats), k, feats[0].shape[-1])
    y = torch.zeros(len(feats), k)
    m = torch.zeros(len(feats), k, dtype=torch.bool)
    for i, (f, c) in enumerate(zip(feats, labelled_chains)):
        x[i, :len(f)] = f
        y[i, :len(f)] = torch.tensor(c.labels)
        m[i, :len(f)] = True
    x = x.clamp(min=-50.0)  # a log-prob of -inf (a token the LM rules out) must not make NaNs
    w = torch.tensor(prm.likelihood_head.weight, requires_grad=True)
    b = torch.tensor([prm.likelihood_head.bias], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def scores() -> torch.Tensor:
        z = x @ w + b
        if chain == "prod":
            return torch.exp(torch.cumsum(torch.nn.functional.logsigmoid(z) * m, dim=1))
        if chain == "min":
            return torch.cummin(torch.sigmoid(z), dim=1).values
        return torch.sigmoid(z)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        s = scores().clamp(1e-6, 1 - 1e-6)
        loss = torch.nn.functional.binary_cross_entropy(s[m], y[m]) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(torch.nn.functional.binary_cross_entropy(scores().clamp(1e-6, 1 - 1e-6)[m], y[m]))
    return replace(prm.likelihood_head, weight=tuple(w.detach().tolist()), bias=float(b.detach()), chain=chain,
                   training={"chains": len(labelled_chains), "steps": int(m.sum()), "bce": round(final, 5),
                             "l2": l2})
