"""Step formats: answer extraction per preset (the grader's extractor), and bad markers rejected up front."""
import pytest

from treesearch.step_format import StepFormat


@pytest.mark.parametrize("preset, text, answer", [
    ("paper", "The answer is: 42 ки\n", "42"),
    ("newline", "The answer is 7.\n", "7"),
    ("paragraph", "So the final answer is 3/4.\n\n", "3/4"),
    ("paragraph", "Hence $\\boxed{\\frac{1}{2}}$\n\n", "\\frac{1}{2}"),
    ("newline", "Step 1: 2 + 3 = 5\n", None),
    ("paper", "Step 2: so \\boxed{5} ки\n", None),  # the paper's format ends only at 'The answer is'
    ("paragraph", "Final Answer: The final answer is $28$. I hope it is correct.", "28"),
    ("paragraph", "The roots are $\\boxed{-2}$ and $\\boxed{1}$.\n\n", "-2, 1"),
])
def test_presets_extract_the_answer(preset, text, answer):
    assert StepFormat.preset(preset).extract_answer(text) == answer


def test_bad_formats_are_rejected():
    with pytest.raises(ValueError, match="unknown answer marker.*'The answer is'"):
        StepFormat("\n", ("The answer is",))
    with pytest.raises(ValueError, match="no answer markers"):
        StepFormat("\n", ())
    with pytest.raises(ValueError, match="non-empty"):
        StepFormat("", ())
    with pytest.raises(ValueError, match="unknown step format"):
        StepFormat.preset("nope")
