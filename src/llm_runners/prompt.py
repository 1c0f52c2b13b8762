"""Messages -> the prompt text a CLI receives.

A CLI takes one prompt per turn. When a conversation is new (or its CLI session is gone) the whole history is
rendered into that prompt; when the CLI's own session is resumed, only the messages after the last assistant turn
are rendered. The system prompt never goes into this text: each runner delivers it the CLI's own best way (a flag
or a file that replaces the CLI's default prompt).

Images are not inlined as text. Each image of the rendered messages gets a placeholder (``[image 1]``) and the
runner hands the image itself to the CLI (inline block or temp file), in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

from .types import ImagePart, Message, TextPart

_ROLE_TITLES = {"user": "User", "assistant": "Assistant", "tool": "Tool result"}

TRANSCRIPT_PREAMBLE = (
    "The conversation so far is below, oldest first. Reply to the last User message as the Assistant; "
    "do not repeat the transcript and do not write the role labels."
)


def _render_content(message: Message, image_counter: list[int]) -> str:
    pieces: list[str] = []
    for part in message.content:
        if isinstance(part, TextPart):
            pieces.append(part.text)
        elif isinstance(part, ImagePart):
            image_counter[0] += 1
            pieces.append(f"[image {image_counter[0]}]")
    return "\n".join(p for p in pieces if p)


def _render_one(message: Message, image_counter: list[int]) -> str:
    body = _render_content(message, image_counter)
    if message.role == "assistant" and message.tool_calls:
        calls = "\n".join(
            f"[called tool {c.name} (id {c.id}) with arguments {c.arguments}]" for c in message.tool_calls
        )
        body = f"{body}\n{calls}" if body else calls
    if message.role == "tool":
        label = f"[result of tool call {message.tool_call_id}"
        label += f" ({message.name})]" if message.name else "]"
        body = f"{label}\n{body}"
    return body


def conversation_messages(messages: Sequence[Message]) -> list[Message]:
    """The messages that go into prompt text: everything but system messages."""
    return [m for m in messages if m.role != "system"]


def render_transcript(messages: Sequence[Message]) -> str:
    """Render a whole history. A history of one user message is that message's text, unchanged."""
    convo = conversation_messages(messages)
    counter = [0]
    if len(convo) == 1 and convo[0].role == "user":
        return _render_one(convo[0], counter)
    blocks = [TRANSCRIPT_PREAMBLE]
    for m in convo:
        blocks.append(f"### {_ROLE_TITLES.get(m.role, m.role.title())}\n{_render_one(m, counter)}")
    return "\n\n".join(blocks)


def render_new_messages(messages: Sequence[Message]) -> str:
    """Render the messages of a resumed turn (those after the last assistant message): usually one user message,
    sent as is; several (tool results, then a user message) are joined with blank lines."""
    convo = conversation_messages(messages)
    counter = [0]
    return "\n\n".join(_render_one(m, counter) for m in convo)


def images_of(messages: Sequence[Message]) -> list[ImagePart]:
    """The images of the rendered messages, in placeholder order."""
    return [img for m in conversation_messages(messages) for img in m.images]


def last_assistant_index(messages: Sequence[Message]) -> int:
    """Index of the last assistant message, or -1."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "assistant":
            return i
    return -1
