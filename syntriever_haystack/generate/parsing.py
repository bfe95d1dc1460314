"""Tolerant parsing of LLM answers: JSON when asked for, plain text otherwise, never a guess.

Every parser returns the value or raises :class:`ParseFailure` with a short reason code; the caller retries
and finally counts the failure (see :class:`~syntriever_haystack.generate.llm.LLMClient`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from syntriever_haystack.generate.prompts import PromptTemplate


class ParseFailure(ValueError):  # noqa: N818 - reads better at call sites
    """The answer could not be read; ``reason`` is a short code counted in the run summary."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(f"{reason}: {text[:200]!r}")
        self.reason = reason
        self.text = text


_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*(.*?)\s*```\s*$", re.DOTALL)
_YES = {"yes", "y", "true", "relevant", "1"}
_NO = {"no", "n", "false", "irrelevant", "not relevant", "0"}
_LEAD = re.compile(r"^\s*(?:answer|response|output|query|passage|reasoning)\s*[:：]\s*", re.IGNORECASE)


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (code fences, prose around it and trailing commas tolerated)."""
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    start = text.find("{")
    while start != -1:
        depth, in_string, escaped = 0, False, False
        for index in range(start, len(text)):
            char = text[index]
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    candidate = text[start : index + 1]
                    for attempt in (candidate, re.sub(r",\s*([}\]])", r"\1", candidate)):
                        try:
                            value = json.loads(attempt)
                        except json.JSONDecodeError:
                            continue
                        if isinstance(value, dict):
                            return value
                    break
        start = text.find("{", start + 1)
    return None


def _answer_text(template: PromptTemplate, text: str) -> Any:
    """The answer field of a JSON answer, or the stripped text when the answer is not JSON."""
    stripped = text.strip()
    if "{" in stripped:
        obj = extract_json_object(stripped)
        if obj is not None:
            if template.answer_field in obj:
                return obj[template.answer_field]
            if len(obj) == 1:
                return next(iter(obj.values()))
            raise ParseFailure("json_missing_field", text)
        if stripped.startswith("{"):
            raise ParseFailure("malformed_json", text)
    return stripped


def parse_answer(template: PromptTemplate, text: str | None, *, finish_reason: str | None = None) -> Any:
    """Read the answer of ``template`` from ``text``.

    - ``text``: the passage/query/reasoning (first line only for single-line queries), at least 2 words;
      an answer cut by the token limit (``finish_reason == "length"``) fails as ``truncated``.
    - ``yes_no``: ``True``/``False`` from the first word (yes/no/true/false/relevant/irrelevant).
    - ``choice``: ``1`` or ``2`` from the first number or "passage 1/2".

    :raises ParseFailure: with reason ``empty``, ``truncated``, ``malformed_json``, ``json_missing_field``,
        ``not_yes_no`` or ``not_a_choice``.
    """
    if text is None or not text.strip():
        raise ParseFailure("empty", text or "")
    value = _answer_text(template, text)
    if template.output == "yes_no":
        if isinstance(value, bool):
            return value
        word = _LEAD.sub("", str(value)).strip().strip("'\".*").lower()
        first = re.split(r"[\s.,;:!]+", word, maxsplit=1)[0] if word else ""
        if word in _YES or first in _YES:
            return True
        if word in _NO or first in _NO or word.startswith("not relevant"):
            return False
        raise ParseFailure("not_yes_no", text)
    if template.output == "choice":
        if isinstance(value, int) and value in (1, 2):
            return value
        match = re.search(r"(?:passage\s*#?\s*)?\b([12])\b", str(value), re.IGNORECASE)
        if match is None:
            raise ParseFailure("not_a_choice", text)
        return int(match.group(1))
    answer = _LEAD.sub("", str(value)).strip()
    if finish_reason == "length":
        raise ParseFailure("truncated", text)
    single_line = "\n" in (template.generation_kwargs.get("stop") or [])
    if single_line:
        answer = answer.splitlines()[0].strip() if answer else ""
    answer = answer.strip().strip('"').strip()
    if len(answer.split()) < 2:
        raise ParseFailure("empty", text)
    return answer
