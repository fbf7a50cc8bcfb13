"""Character-level tokenizer for the built-in task, as a transformers fast tokenizer.

One token per character keeps digit-level arithmetic visible to a tiny model (no BPE
merges hiding carries) and makes per-step token counts, hence FLOPs, easy to reason
about. Built with ``tokenizers`` and wrapped in ``PreTrainedTokenizerFast`` so a
checkpoint directory loads offline with ``AutoTokenizer.from_pretrained(dir)``.
Encoding adds ``<bos>`` by default (as Llama tokenizers do); ``decode`` concatenates
characters with no inserted spaces, so text round-trips exactly.
"""
from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]  # ids 0..3
# Everything the task prints, plus the rest of printable ASCII so stray text still encodes.
CHARS = list(string.digits + string.ascii_letters + " \n" + "".join(c for c in string.punctuation))


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Isolate every character (newline included: [\s\S] matches any char).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()  # join pieces as-is: no spaces between characters
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,
        padding_side="left",  # batched generation pads on the left
        model_max_length=512,
    )
    return fast


def encode_example(tokenizer: PreTrainedTokenizerFast, question: str, steps: list[str]) -> tuple[list[int], int]:
    """Token ids of ``<bos> question \\n steps <eos>`` and where the solution starts."""
    prompt = tokenizer.encode(prompt_text(question))  # includes <bos>
    solution = tokenizer.encode("".join(steps), add_special_tokens=False)
    return prompt + solution + [tokenizer.eos_token_id], len(prompt)


def prompt_text(question: str) -> str:
    """What the policy is conditioned on: the question then a newline; steps follow."""
    return question + "\n"


def portable_tokenizer_files(directory) -> None:
    """Name the tokenizer class every supported transformers knows in a saved checkpoint.

    transformers 5 saves fast tokenizers as "TokenizersBackend", a class 4.x cannot load;
    "PreTrainedTokenizerFast" loads the same tokenizer.json in both (4.56 and 5.x tested).
    The model inputs are named too: 4.x would otherwise add ``token_type_ids``, which a Llama
    ``generate`` refuses."""
    import json
    from pathlib import Path

    path = Path(directory) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    portable = {**config, "model_input_names": ["input_ids", "attention_mask"]}
    if portable.get("tokenizer_class") == "TokenizersBackend":
        portable["tokenizer_class"] = "PreTrainedTokenizerFast"
    if portable != config:
        path.write_text(json.dumps(portable, indent=2, ensure_ascii=False) + "\n")
