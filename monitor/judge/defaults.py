"""What the service judges with when the settings leave it open: the judge, and the hybrid's skip line.

Its own module, free of the judges' imports, so the settings apply at start-up, before a model loads,
the same rule the judge factory applies when it builds the judge: the two cannot disagree about which
line runs, and the detector role computes the version its workers' verdicts carry from it.
"""

from __future__ import annotations

DEFAULT_JUDGE = "hybrid"
"""What ``judge=default`` runs (README "Safety judge" says why)."""

DEFAULT_SKIP_LINE = 0.03
"""The hybrid's skip line unless ``judge_prompt_skip_below`` says otherwise: below it the heads' prompt
probability stands and the encoder does not read the prompt. Chosen on the validation prompts
(``bench/judge_thresholds.py``, its second table) as the highest line tried at which no validation decision
changed at the judge's own threshold and AUROC over all files fell by at most 0.001."""

DEFAULT_SKIP_MIN_PROMPT_LINE = 0.3
"""A prompt line moved below this turns the default skip line off. A skipped prompt keeps the heads'
probability, below the skip line, so it can never be flagged; that changed no decision at the judge's own
threshold, but on the validation prompts the highest full-hybrid probability among the skipped ones was
0.286, so a line moved near that would lose flags the full hybrid gives."""


def check_skip_line(value: float | None) -> float | None:
    """A skip line as the judge takes it: ``None`` or ``0`` for none (every prompt read by both judges), else a
    probability strictly between 0 and 1.

    >>> check_skip_line(0), check_skip_line(0.05)
    (None, 0.05)
    """
    if value is None or value == 0:
        return None
    if not 0.0 < value < 1.0:
        raise ValueError(f"judge_prompt_skip_below {value!r} must lie strictly between 0 and 1 (0: no skip line)")
    return float(value)


def skip_line(setting: float | None, prompt_threshold: float | None = None, judge: str = DEFAULT_JUDGE) -> float | None:
    """The skip line in force for the ``judge_prompt_skip_below`` setting (``None``: every prompt read by both
    judges). Unset, :data:`DEFAULT_SKIP_LINE`, unless an operator moved the prompt line below
    :data:`DEFAULT_SKIP_MIN_PROMPT_LINE`; ``0`` turns the cascade off; a line set must lie below a moved
    prompt line. Only the hybrid (``judge`` ``hybrid``, or ``default`` while that runs it) has a prompt pass to
    skip: for another judge a line is refused.

    >>> skip_line(None), skip_line(None, 0.3), skip_line(None, 0.29), skip_line(0), skip_line(0.01, 0.2)
    (0.03, 0.03, None, None, 0.01)
    >>> skip_line(None, judge="heads"), skip_line(0, judge="heads")
    (None, None)
    """
    if (DEFAULT_JUDGE if judge == "default" else judge) != "hybrid":
        if setting:
            raise ValueError(f"judge_prompt_skip_below applies to the hybrid judge (it skips the encoder's prompt pass), "
                             f"not to {judge!r}: unset it, or 0, or judge with the hybrid (judge default or hybrid)")
        return None
    if setting is None:
        moved_low = prompt_threshold is not None and prompt_threshold < DEFAULT_SKIP_MIN_PROMPT_LINE
        return None if moved_low else DEFAULT_SKIP_LINE
    line = check_skip_line(setting)
    if line is not None and prompt_threshold is not None and prompt_threshold <= line:
        raise ValueError(f"judge_prompt_skip_below ({line!r}) must lie below judge_prompt_threshold ({prompt_threshold!r}), "
                         "far below it: a skipped prompt keeps the heads' probability, under the skip line, and is never flagged")
    return line
