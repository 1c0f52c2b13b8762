from llm_runners.sessions import SessionStore, history_key
from llm_runners.types import Message, ToolCall


def u(text: str) -> Message:
    return Message(role="user", content=text)


def a(text: str, calls: list[ToolCall] | None = None) -> Message:
    return Message(role="assistant", content=text, tool_calls=calls or [])


def test_first_turn_has_nothing_to_resume() -> None:
    store = SessionStore()
    claim = store.claim("p", None, [u("hi")])
    assert claim.session_id is None and claim.first_new == 0


def test_follow_up_resumes_with_only_new_messages() -> None:
    store = SessionStore()
    store.remember("p", None, [u("u1")], a("a1"), "sess-1")
    claim = store.claim("p", None, [u("u1"), a("a1 "), u("u2")])  # whitespace re-serialised by a client
    assert claim.session_id == "sess-1"
    assert claim.first_new == 2


def test_claim_takes_the_entry_so_two_callers_never_share_a_session() -> None:
    store = SessionStore()
    store.remember("p", None, [u("u1")], a("a1"), "sess-1")
    first = store.claim("p", None, [u("u1"), a("a1"), u("u2")])
    second = store.claim("p", None, [u("u1"), a("a1"), u("u2 other")])
    assert first.session_id == "sess-1"
    assert second.session_id is None and second.first_new == 0


def test_conversation_key_and_provider_separate_sessions() -> None:
    store = SessionStore()
    store.remember("p", "conv-A", [u("u1")], a("a1"), "sess-A")
    assert store.claim("p", "conv-B", [u("u1"), a("a1"), u("u2")]).session_id is None
    assert store.claim("q", "conv-A", [u("u1"), a("a1"), u("u2")]).session_id is None
    assert store.claim("p", "conv-A", [u("u1"), a("a1"), u("u2")]).session_id == "sess-A"


def test_different_history_does_not_match() -> None:
    store = SessionStore()
    store.remember("p", None, [u("u1")], a("a1"), "sess-1")
    assert store.claim("p", None, [u("u1"), a("something else"), u("u2")]).session_id is None


def test_tool_call_arguments_compare_as_json() -> None:
    k1 = history_key("p", None, [a("", [ToolCall(id="c1", name="f", arguments='{"x": 1, "y": 2}')])])
    k2 = history_key("p", None, [a("", [ToolCall(id="c1", name="f", arguments='{"y":2,"x":1}')])])
    assert k1 == k2


def test_expiry_and_bound() -> None:
    store = SessionStore(ttl=0.0)
    store.remember("p", None, [u("u1")], a("a1"), "sess-1")
    assert store.claim("p", None, [u("u1"), a("a1"), u("u2")]).session_id is None
    small = SessionStore(max_entries=2)
    for i in range(5):
        small.remember("p", None, [u(f"u{i}")], a("a"), f"s{i}")
    assert len(small) == 2
    assert small.claim("p", None, [u("u4"), a("a"), u("x")]).session_id == "s4"
    assert small.claim("p", None, [u("u0"), a("a"), u("x")]).session_id is None
