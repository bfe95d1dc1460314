"""How a conversation becomes a prompt: a few-shot transcript for base models, chat dicts for chat templates."""

from __future__ import annotations

from collections.abc import Sequence

from haystack.dataclasses import ChatMessage, ChatRole

__all__ = [
    "FEW_SHOT_INPUT_HEADER",
    "FEW_SHOT_RESPONSE_HEADER",
    "FEW_SHOT_STOP",
    "chat_dicts",
    "cut_at_stop",
    "render_few_shot_prompt",
]

# Chosen on Gemma 3 270M (base) with the default query-generation prompt on 60 MedQuAD passages x 3 query
# types: plain "Input:" / "Response:" headers gave more short, on-topic, well-typed queries than "### Input:" /
# "### Response:" (Alpaca style) or "## Input" headers, both greedy and at temperature 0.7.
FEW_SHOT_INPUT_HEADER = "Input:"
FEW_SHOT_RESPONSE_HEADER = "Response:"
#: Generation in the few-shot format ends where the model starts a new turn.
FEW_SHOT_STOP: tuple[str, ...] = (f"\n{FEW_SHOT_INPUT_HEADER}", f"\n{FEW_SHOT_RESPONSE_HEADER}")

_ROLES = (ChatRole.SYSTEM, ChatRole.USER, ChatRole.ASSISTANT)


def _check_role(message: ChatMessage) -> None:
    if message.role not in _ROLES:
        raise ValueError(
            f"GGUFChatGenerator renders system, user and assistant messages only; got a {message.role.value} "
            "message. Tool calls are not supported by the embedded models."
        )


def render_few_shot_prompt(messages: Sequence[ChatMessage]) -> str:
    """
    Render a conversation as a plain few-shot transcript for a *base* (non-instruct) model.

    The system text comes first, as a paragraph; each user turn becomes an input block and each assistant turn
    the answer to it; the transcript ends with an open response header for the model to complete::

        <system text>

        Input:
        <user turn 1>

        Response:
        <assistant turn 1>

        Input:
        <last user turn>

        Response:

    Consecutive messages of the same role are joined by a blank line. Generation stops at the next header
    (:data:`FEW_SHOT_STOP`), which is stripped from the reply.

    :param messages: System, user and assistant messages; the last one must be a user message.
    :returns: The prompt text (without any BOS token; the tokenizer adds it).
    :raises ValueError: If there is no message, the last message is not a user message, or a message has
        another role (tool messages) or no text.
    """
    turns: list[tuple[ChatRole, str]] = []
    for message in messages:
        _check_role(message)
        text = (message.text or "").strip()
        if turns and turns[-1][0] == message.role:
            turns[-1] = (message.role, f"{turns[-1][1]}\n\n{text}".strip())
        else:
            turns.append((message.role, text))
    if not turns or turns[-1][0] != ChatRole.USER:
        raise ValueError("The last message must be a user message: it is the input the model answers.")
    parts: list[str] = []
    for role, text in turns:
        if role == ChatRole.SYSTEM:
            if text:
                parts.append(f"{text}\n\n")
        elif role == ChatRole.USER:
            parts.append(f"{FEW_SHOT_INPUT_HEADER}\n{text}\n\n{FEW_SHOT_RESPONSE_HEADER}\n")
        else:
            parts.append(f"{text}\n\n")
    return "".join(parts)


def chat_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """OpenAI-style ``{"role", "content"}`` dicts for a chat template (same checks as the few-shot format)."""
    out = []
    for message in messages:
        _check_role(message)
        out.append({"role": message.role.value, "content": message.text or ""})
    if not out or out[-1]["role"] != "user":
        raise ValueError("The last message must be a user message: it is the input the model answers.")
    return out


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string (excluded), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
