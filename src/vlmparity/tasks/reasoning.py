"""Reasoning-tag stripping applied to every response before scoring (lmms-eval >= 0.7, research §4.7).

lmms-eval's `--reasoning_tags` defaults to `<think>…</think>` and `<analysis>…</analysis>`; thinking models
are therefore scored on the text after their reasoning block. Matching is case-sensitive.
"""

from __future__ import annotations

from collections.abc import Sequence

TagPair = tuple[str, str]

DEFAULT_REASONING_TAGS: tuple[TagPair, ...] = (("<think>", "</think>"), ("<analysis>", "</analysis>"))


def strip_reasoning_tags(text: str, tags: Sequence[TagPair] = DEFAULT_REASONING_TAGS) -> str:
    """Remove every complete `start…end` block, keep only what follows an orphan end tag, then strip.

    For each pair in order: while both tags occur, the first start tag and the first end tag after it are
    cut out together with what lies between; a start tag with no end tag after it stops the loop and is
    left as is. If afterwards the end tag still occurs but the start tag no longer does (a server that
    swallowed the opening tag), only the text after the last end tag is kept.
    """
    result = text
    for start, end in tags:
        while start in result and end in result:
            i = result.find(start)
            j = result.find(end, i)
            if j == -1:  # only an end tag before the start tag: the rest is an unclosed block
                break
            result = result[:i] + result[j + len(end) :]
        if end in result and start not in result:
            result = result[result.rfind(end) + len(end) :]
    return result.strip()


def postprocess_response(text: str | None, tags: Sequence[TagPair] | None = DEFAULT_REASONING_TAGS) -> str:
    """What lmms-eval hands to a task's process_results: tags stripped (unless `tags` is None), then `.strip()`.

    `None` (an empty message content) becomes `""`, as in lmms-eval.
    """
    if text is None:
        return ""
    if tags:
        text = strip_reasoning_tags(text, tags)
    return text.strip()
