"""The built-in miniature task: chained-arithmetic questions with gold solutions and an exact step
checker (``task``), and its character-level tokenizer (``tokenizer``).

It lives in the lowest layer so that both the exact-checker PRM (``reward_models.oracle``) and the
harness (``experiments``: the demo, the training and measurement scripts) can import it without an
upward import. The committed models trained on it stay in ``experiments/builtin/checkpoints``."""
