"""A scripted "LLM" that answers syntriever's prompts plausibly and deterministically (for the fake server).

It recognises the step from the system message and answers in the format the prompt asks for:
passages that reuse the query's words, queries made of the passage's words (varied by ``seed``), and
relevance / preference verdicts from word overlap. With ``response_format`` it answers in JSON.
Use it as ``FakeOpenAIServer(syntriever_responder)`` or ``--responder tests.support.scripted_llm:syntriever_responder``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_STOP = set(
    "the a an of to in and or is are was were be by for on with as at from that this it its not no what".split()
)


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]


def _field(text: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def _overlap(query: str, passage: str) -> float:
    q = set(_words(query))
    return len(q & set(_words(passage))) / max(len(q), 1)


def answer_for(system: str, user: str, seed: int) -> tuple[str, str]:
    """``(answer_field, answer)`` for a syntriever prompt."""
    query = _field(user, "Query")
    if "hard negative" in system:
        return "passage", f"Background on {' '.join(_words(query)[:3])}: history, definitions and unrelated statistics."
    if "reference passages" in system:
        words = " ".join(_words(query))
        return "passage", f"This passage explains {words}. It states the facts about {words} clearly and completely."
    if "step by step" in system:
        return "reasoning", f"The query asks about {' '.join(_words(query))}. A relevant document would define it."
    if "compare two search results" in system:
        p1, p2 = _field(user, "Passage 1"), _field(user, "Passage 2")
        return "answer", "1" if _overlap(query, p1) >= _overlap(query, p2) else "2"
    if "judge search results" in system or "label search results" in system:
        passage = _field(user, "Passage")
        return "answer", "yes" if _overlap(query, passage) >= 0.5 else "no"
    if "search queries that a passage answers" in system:
        passage = _field(user, "Passage")
        kind = _field(user, "Type")
        words = list(dict.fromkeys(_words(passage)))
        start = int(hashlib.sha1(f"{seed}".encode()).hexdigest(), 16) % max(len(words) - 3, 1)
        picked = " ".join(words[start : start + 3]) or "unknown topic"
        if kind == "keywords":
            return "query", picked
        if kind == "claim":
            return "query", f"{picked} is important"
        return "query", f"what is known about {picked}?"
    return "answer", "I do not know."


def syntriever_responder(request: dict[str, Any]) -> str:
    messages = request.get("messages") or []
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
    user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
    field, answer = answer_for(str(system), str(user), int(request.get("seed") or 0))
    if request.get("response_format"):
        value: Any = int(answer) if answer in ("1", "2") else answer
        return json.dumps({field: value})
    return answer
