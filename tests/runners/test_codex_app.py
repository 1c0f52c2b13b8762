"""Codex app-server dialect: the turn parser and error mapping over real transcripts in tests/fixtures/codex_app/
(see its README), and how the codex provider picks its transport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_runners.errors import (
    AuthenticationError,
    BinaryNotFound,
    ContextLengthExceeded,
    LLMError,
    ModelNotFound,
    Overloaded,
    RateLimited,
    SessionNotFound,
    UpstreamError,
)
from llm_runners.runners.codex import NO_TOOLS_ARGS, CodexRunner
from llm_runners.runners.codex_app import (
    OVERLOADED_RETRY_AFTER,
    CodexAppRunner,
    TurnParser,
    _model_infos,
    approval_answer,
    rpc_error,
)
from llm_runners.types import ChatRequest, Done, ReasoningDelta, StreamEvent, TextDelta, Usage, UsageEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex_app"


def transcript(name: str) -> list[tuple[str, dict[str, Any]]]:
    """(direction, message) pairs: ``>`` sent by the client, ``<`` sent by the server."""
    out = []
    for line in (FIXTURES / f"{name}.transcript").read_text().splitlines():
        direction, rest = line[0], line[1:]
        out.append((direction, json.loads(rest.split(" ", 1)[1])))
    return out


def turns(name: str) -> list[tuple[TurnParser, list[dict[str, Any]]]]:
    """One parser per ``turn/start`` of the transcript and the server messages that followed it."""
    messages = transcript(name)
    result: list[tuple[TurnParser, list[dict[str, Any]]]] = []
    for i, (direction, msg) in enumerate(messages):
        if direction != ">" or msg.get("method") != "turn/start":
            continue
        answer = next(m for d, m in messages[i:] if d == "<" and m.get("id") == msg["id"] and "method" not in m)
        parser = TurnParser(thread_id=msg["params"]["threadId"], turn_id=answer["result"]["turn"]["id"], model="m")
        result.append((parser, [m for d, m in messages[i + 1 :] if d == "<" and "method" in m]))
    return result


def replay(parser: TurnParser, messages: list[dict[str, Any]]) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for message in messages:
        events += parser.feed(message)
        if parser.done:
            break
    assert parser.done
    return events


def test_plain_answer_streams_deltas_then_usage_and_done() -> None:
    [(parser, messages)] = turns("plain")
    events = replay(parser, messages)
    assert events[:3] == [TextDelta("pong"), TextDelta(" from"), TextDelta(" fake")]
    assert events[3] == UsageEvent(Usage(input_tokens=9862, output_tokens=3))
    done = events[4]
    assert isinstance(done, Done) and done.session_id == parser.thread_id and done.model == "m"
    assert any("Model metadata for `fake-model` not found" in w for w in done.warnings)
    assert len(events) == 5


def test_slow_stream_keeps_order_and_timing() -> None:
    [(parser, messages)] = turns("slow")
    texts = [e.text for e in replay(parser, messages) if isinstance(e, TextDelta)]
    assert texts == ["one", " two", " three", " four"]
    stamps = [
        float(line[1:].split(" ", 1)[0])
        for line in (FIXTURES / "slow.transcript").read_text().splitlines()
        if "item/agentMessage/delta" in line
    ]
    assert stamps[-1] - stamps[0] > 2.0  # the deltas really arrived as the fake streamed them (0.8 s apart)


def test_second_turn_of_a_live_thread_reports_its_own_usage() -> None:
    (first, m1), (second, m2) = turns("two")
    assert "".join(e.text for e in replay(first, m1) if isinstance(e, TextDelta)) == "BANANA noted"
    events = replay(second, m2)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "the word was BANANA"
    usage = next(e.usage for e in events if isinstance(e, UsageEvent))
    total = next(
        m["params"]["tokenUsage"]["total"]
        for m in m2
        if m.get("method") == "thread/tokenUsage/updated" and m["params"]["turnId"] == second.turn_id
    )
    assert usage.input_tokens < total["inputTokens"]  # the turn's own tokens, not the thread's running total


def test_resumed_thread_ignores_the_replayed_usage_of_an_earlier_turn() -> None:
    (first, m1), (second, m2) = turns("resume")
    replay(first, m1)
    events = replay(second, m2)
    assert UsageEvent(Usage(input_tokens=14369, output_tokens=4)) in events
    assert second.thread_id == first.thread_id


def test_unknown_thread_on_resume_is_session_not_found() -> None:
    answer = next(m for d, m in transcript("resume") if d == "<" and m.get("id") == 4 and "error" in m)
    error = rpc_error("thread/resume", answer["error"])
    assert isinstance(error, SessionNotFound) and error.provider == "codex"


def test_reasoning_deltas_then_text() -> None:
    [(parser, messages)] = turns("reasoning")
    events = replay(parser, messages)
    assert events[:3] == [ReasoningDelta("thinking"), ReasoningDelta(" hard"), ReasoningDelta("\n\nraw thought")]
    assert events[3:5] == [TextDelta("pong"), TextDelta(" done")]
    assert events[5] == UsageEvent(Usage(input_tokens=100, cached_tokens=40, output_tokens=7, reasoning_tokens=2))
    assert isinstance(events[6], Done)


def test_a_reasoning_item_that_did_not_stream_is_emitted_whole() -> None:
    parser = TurnParser(thread_id="t", turn_id="u")
    item = {"type": "reasoning", "id": "r", "summary": ["a", "b"], "content": []}
    assert parser.feed({"method": "item/completed", "params": {"threadId": "t", "turnId": "u", "item": item}}) == [
        ReasoningDelta("a\n\nb")
    ]


def test_a_message_that_came_whole_is_emitted_from_item_completed() -> None:
    parser = TurnParser(thread_id="t", turn_id="u")
    base = {"threadId": "t", "turnId": "u"}
    assert parser.feed({"method": "item/agentMessage/delta", "params": {**base, "itemId": "a", "delta": "he"}}) == [
        TextDelta("he")
    ]
    item = {"type": "agentMessage", "id": "a", "text": "hello"}
    assert parser.feed({"method": "item/completed", "params": {**base, "item": item}}) == [TextDelta("llo")]
    item2 = {"type": "agentMessage", "id": "b", "text": "second"}
    assert parser.feed({"method": "item/completed", "params": {**base, "item": item2}}) == [TextDelta("\n\nsecond")]
    other = {"threadId": "t", "turnId": "other", "itemId": "c", "delta": "x"}
    assert parser.feed({"method": "item/agentMessage/delta", "params": other}) == []


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("err401", AuthenticationError),
        ("err429", RateLimited),
        ("err500", UpstreamError),
        ("errcontext", ContextLengthExceeded),
        ("err404", ModelNotFound),
        ("err529", Overloaded),
    ],
)
def test_failed_turns_map_to_the_error_tree(name: str, error: type[LLMError]) -> None:
    [(parser, messages)] = turns(name)
    with pytest.raises(LLMError) as info:
        replay(parser, messages)
    assert type(info.value) is error and info.value.provider == "codex"
    assert info.value.message.startswith("codex: ")


def test_interrupted_turn_is_an_error() -> None:
    [(parser, messages)] = turns("interrupt")
    with pytest.raises(UpstreamError, match="interrupted"):
        replay(parser, messages)
    assert parser.status == "interrupted"


def test_overloaded_answer_carries_retry_after() -> None:
    error = rpc_error("turn/start", {"code": -32001, "message": "Server overloaded; retry later"})
    assert isinstance(error, Overloaded) and error.retry_after == OVERLOADED_RETRY_AFTER
    hinted = rpc_error("turn/start", {"code": -32001, "message": "Server overloaded, retry after 3s"})
    assert isinstance(hinted, Overloaded) and hinted.retry_after == 3.0
    other = rpc_error("model/list", {"code": -32600, "message": "bad"})
    assert type(other) is UpstreamError and "model/list" in other.message


def test_approvals_are_declined_unless_tools_are_allowed() -> None:
    for method in ("item/commandExecution/requestApproval", "item/fileChange/requestApproval"):
        assert approval_answer(method, False) == {"decision": "decline"}
        assert approval_answer(method, True) == {"decision": "accept"}
    assert approval_answer("execCommandApproval", False) == {
        "decision": {"denied": {"rejection": "tools are off (llm-runners)"}}
    }
    assert approval_answer("mcpServer/elicitation/request", True) == {
        "action": "decline",
        "content": None,
        "_meta": None,
    }
    assert approval_answer("item/tool/call", True) is None  # answered with a JSON-RPC error


def test_model_list_answer() -> None:
    answer = next(m for d, m in transcript("models") if d == "<" and m.get("id") == 3)
    models = list(_model_infos(answer["result"]["data"], "codex"))
    assert [m.id for m in models][:2] == ["gpt-6.1-sol", "gpt-6-astra"] and len(models) == 9
    assert models[0].display_name == "GPT-6.1-Sol"
    assert list(_model_infos([{"id": "x", "hidden": True}, {"nope": 1}, "junk"], "codex")) == []


def test_transport_picks_the_class() -> None:
    assert type(CodexRunner()) is CodexAppRunner  # the default: measured faster, and it streams tokens
    assert type(CodexRunner(transport="exec")) is CodexRunner
    app = CodexRunner(transport="app-server", binary="/bin/true", warm=1, warm_idle=5.0)
    assert type(app) is CodexAppRunner and app.capabilities.token_streaming
    assert app.warm_pool is None  # the server is the warm process: no spares
    assert not CodexRunner.capabilities.token_streaming
    with pytest.raises(ValueError, match="transport"):
        CodexRunner(transport="grpc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="transport"):
        CodexAppRunner(transport="exec")


def test_server_argv_and_private_home(tmp_path: Path) -> None:
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    (codex_home / "auth.json").write_text("{}")
    (codex_home / "config.toml").write_text('[mcp_servers.x]\ncommand = "evil"\n')
    runner = CodexRunner(transport="app-server", binary="/bin/true", env={"CODEX_HOME": str(codex_home)})
    assert isinstance(runner, CodexAppRunner)
    argv = runner.server_argv()
    assert argv[:2] == ["/bin/true", "app-server"] and "analytics.enabled=false" in argv
    assert all(a in argv for a in NO_TOOLS_ARGS)
    home = Path(runner.server_env()["CODEX_HOME"])
    assert home != codex_home and (home / "auth.json").resolve() == (codex_home / "auth.json").resolve()
    assert not (home / "config.toml").exists()
    tools_on = CodexRunner(transport="app-server", binary="/bin/true", allow_tools=True, user_config=True,
                           env={"CODEX_HOME": str(codex_home)})  # fmt: skip
    assert isinstance(tools_on, CodexAppRunner)
    assert "shell_tool" not in tools_on.server_argv()
    assert tools_on.server_env()["CODEX_HOME"] == str(codex_home)


@pytest.mark.anyio
async def test_a_server_binary_that_cannot_start_is_binary_not_found(tmp_path: Path) -> None:
    path = tmp_path / "codex"
    path.write_text("#!/nonexistent/interpreter\n")
    path.chmod(0o755)
    runner = CodexRunner(binary=str(path), env={"HOME": str(tmp_path), "OPENAI_API_KEY": "k"})  # past the auth check
    with pytest.raises(BinaryNotFound, match="npm install -g @openai/codex"):
        await runner.complete(ChatRequest(messages=[{"role": "user", "content": "hi"}]))
    missing = CodexRunner(binary=str(tmp_path / "absent"), env={"HOME": str(tmp_path)})
    with pytest.raises(BinaryNotFound, match="npm install -g @openai/codex"):
        await missing.complete(ChatRequest(messages=[{"role": "user", "content": "hi"}]))
    await runner.aclose()
    await missing.aclose()


def test_the_router_passes_codex_its_transport() -> None:
    from llm_runners.router import build_provider

    assert type(build_provider("codex", {})) is CodexAppRunner
    assert type(build_provider("codex", {"transport": "app-server"})) is CodexAppRunner
    assert type(build_provider("codex", {"transport": "exec"})) is CodexRunner
    assert type(build_provider("work", {"type": "codex", "transport": "exec"})) is CodexRunner
    with pytest.raises(ValueError, match="'app-server' or 'acp' or 'exec'"):
        build_provider("codex", {"transport": "pigeon"})
    with pytest.raises(ValueError, match="no ACP mode"):
        build_provider("codex", {"transport": "acp"})


def test_retry_notices_are_counted_reported_and_bounded() -> None:
    [(parser, messages)] = turns("retry500")
    with pytest.raises(UpstreamError, match="high demand"):
        replay(parser, messages)
    assert parser.retries == 2  # two "Reconnecting... n/2" notices, then the real error
    seen: list[str] = []
    [(bounded, messages)] = turns("retry500")
    bounded.max_retries, bounded.on_retry = 1, seen.append
    with pytest.raises(UpstreamError, match="high demand") as info:
        for message in messages:
            bounded.feed(message)
    assert bounded.retries == 2 and not bounded.done  # ended at the second notice, before codex gave up
    assert seen[0].startswith("Reconnecting... 1/2 (We")
    assert "Reconnecting" not in info.value.message


def test_rate_limit_notifications_are_quotas() -> None:
    import json
    from pathlib import Path

    from llm_runners.quotas import most_used
    from llm_runners.runners.codex_app import rate_limit_quotas

    message = json.loads((Path(__file__).parents[1] / "fixtures" / "codex_app" / "rate-limits.json").read_text())
    primary, secondary = rate_limit_quotas(message["params"]["rateLimits"])
    assert (primary.window, primary.percent_used, primary.window_minutes) == ("primary", 43.0, 300)
    assert primary.resets_at == 1796171963 and primary.status is None
    assert (secondary.window, secondary.percent_used, secondary.window_minutes) == ("secondary", 12.0, 10080)
    assert most_used([primary, secondary], now=1796170000) == 43.0
    assert most_used([primary, secondary], now=1796200000) == 12.0  # the primary window has reset
    reached = rate_limit_quotas({"primary": {"usedPercent": 100}, "rateLimitReachedType": "rate_limit_reached"})
    assert reached[0].status == "rejected" and most_used(reached) == 100.0
