from llm_runners.prompt import images_of, last_assistant_index, render_new_messages, render_transcript
from llm_runners.types import ImagePart, Message, TextPart, ToolCall


def test_single_user_message_is_sent_verbatim() -> None:
    msgs = [Message(role="system", content="be brief"), Message(role="user", content="  hello\nworld ")]
    assert render_transcript(msgs) == "  hello\nworld "


def test_transcript_keeps_order_roles_and_leaves_system_out() -> None:
    msgs = [
        Message(role="system", content="SYSTEM-SECRET"),
        Message(role="user", content="u1"),
        Message(role="assistant", content="a1", tool_calls=[ToolCall(id="c1", name="look", arguments='{"q":1}')]),
        Message(role="tool", content="found", tool_call_id="c1", name="look"),
        Message(role="user", content="u2"),
    ]
    text = render_transcript(msgs)
    assert "SYSTEM-SECRET" not in text
    assert text.index("u1") < text.index("a1") < text.index("found") < text.index("u2")
    assert "### User" in text and "### Assistant" in text
    assert "look" in text and '{"q":1}' in text and "c1" in text


def test_images_get_placeholders_in_order() -> None:
    img1 = ImagePart(media_type="image/png", data=b"1")
    img2 = ImagePart(media_type="image/jpeg", data=b"2")
    msgs = [Message(role="user", content=[TextPart(text="look"), img1, img2])]
    assert render_transcript(msgs) == "look\n[image 1]\n[image 2]"
    assert images_of(msgs) == [img1, img2]


def test_new_messages_and_last_assistant() -> None:
    msgs = [
        Message(role="user", content="u1"),
        Message(role="assistant", content="a1"),
        Message(role="user", content="u2"),
    ]
    assert last_assistant_index(msgs) == 1
    assert render_new_messages(msgs[2:]) == "u2"
    assert last_assistant_index(msgs[:1]) == -1
