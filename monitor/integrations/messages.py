"""Text out of the chat-message shapes gateways log.

One reader for every source, because the shapes overlap: OpenAI messages (``content`` a string or a
list of ``{"type": "text", "text": ...}`` parts), the Responses API (``input_text``/``output_text``
parts), Gemini (``parts`` of ``{"text": ...}``) and OpenTelemetry GenAI messages (``parts`` of
``{"type": "text", "content": ...}``). Parts that are not text (images, tool calls) are skipped.

>>> message_text({"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]})
'hi'
>>> message_text({"role": "user", "parts": [{"type": "text", "content": "hello"}]})
'hello'
>>> last_user_text([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
...                 {"role": "user", "content": "c"}])
'c'
>>> reply_text([{"role": "assistant", "content": "x"}, {"role": "tool", "content": "y"}])
'x'
>>> completion_text({"choices": [{"message": {"role": "assistant", "content": "z"}}]})
'z'
"""

from __future__ import annotations

from typing import Any

TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
REPLY_ROLES = frozenset({"assistant", "model"})  # "model": Gemini's name for the assistant


def _is(value: Any, names: frozenset[str]) -> bool:
    """``value in names`` for a string; False for anything else (a list or an object is unhashable: never a 500)."""
    return isinstance(value, str) and value in names


def content_text(content: Any) -> str | None:
    """A string as is; a list of parts (or strings) joined by newlines; anything else None."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return None
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and _is(part.get("type", "text"), TEXT_PART_TYPES):
            text = part.get("text", part.get("content"))
            if isinstance(text, str):
                texts.append(text)
    return "\n".join(texts) if texts else None


def message_text(message: Any) -> str | None:
    """The text of one message: its ``parts`` when present (GenAI, Gemini), else its ``content``."""
    if not isinstance(message, dict):
        return None
    return content_text(message["parts"] if "parts" in message else message.get("content"))


def last_user_text(messages: Any) -> str | None:
    """The prompt: the last user message's text (a plain string counts as one user message)."""
    if isinstance(messages, str):
        return messages
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return None


def reply_text(messages: Any) -> str | None:
    """The response: assistant message texts joined by newlines, None when there are none."""
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        return None
    texts = [
        text
        for message in messages
        if isinstance(message, dict) and _is(message.get("role", "assistant"), REPLY_ROLES)
        for text in [message_text(message)]
        if text
    ]
    return "\n".join(texts) if texts else None


def completion_text(response: Any) -> str | None:
    """Reply text of a response object: chat or text completion, Responses API, Anthropic messages, or a string."""
    if isinstance(response, str):
        return response or None
    if not isinstance(response, dict):
        return None
    if isinstance(response.get("choices"), list):
        texts = []
        for choice in response["choices"]:
            if not isinstance(choice, dict):
                continue
            message = choice.get("message") or choice.get("delta")
            text = content_text(message.get("content")) if isinstance(message, dict) else choice.get("text")
            if isinstance(text, str) and text:
                texts.append(text)
        return "\n".join(texts) if texts else None
    if isinstance(response.get("output"), list):  # Responses API
        return reply_text([item for item in response["output"] if isinstance(item, dict) and item.get("type", "message") == "message"])
    if "content" in response:  # Anthropic messages
        return content_text(response["content"]) or None
    text = response.get("text")
    return text if isinstance(text, str) and text else None
