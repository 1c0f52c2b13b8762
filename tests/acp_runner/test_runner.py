"""The ACP runner against the stand-in agent (a real ACP agent process written with the SDK's agent side)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from standin import STANDIN, agent_log, make_runner

from llm_runners.acp import AcpDialect
from llm_runners.acp.dialects import COPILOT_STATUS, opencode_watch, qwen_watch
from llm_runners.errors import AuthenticationError, InvalidRequest, ModelNotFound, UpstreamError
from llm_runners.sessions import SessionStore
from llm_runners.testing.procs import alive
from llm_runners.types import AgentToolEvent, ChatRequest, Done, ImagePart, ReasoningDelta, TextDelta, UsageEvent

pytestmark = pytest.mark.anyio

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108020000009077")


def ask(text: str, **kw: Any) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


def follow_up(first: ChatRequest, answer: str, text: str, **kw: Any) -> ChatRequest:
    messages = [*first.messages, {"role": "assistant", "content": answer}, {"role": "user", "content": text}]
    return ChatRequest(messages=messages, conversation=first.conversation, **kw)


async def test_answer_streams_with_usage_session_and_model(tmp_path: Path) -> None:
    runner, log = make_runner(tmp_path, sessions=SessionStore())
    events = [e async for e in runner.stream(ask("hello there [slow]"))]
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(texts) == "stand-in/model-a|turn 1|hello there [slow]"
    assert len(texts) == 4
    usage = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert usage and usage[0].output_tokens == 4
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.model == "stand-in/model-a"
    assert done.session_id and done.session_id.startswith("sess-")
    # no fs / terminal capability was offered
    init = agent_log(log, "initialize")[0]
    assert "read_text_file=False" in init["capabilities"] and "terminal=False" in init["capabilities"]
    await runner.aclose()


async def test_first_text_arrives_long_before_the_end(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, sessions=SessionStore(), warm=True)
    await runner.start()  # warm: the process is up before the request
    assert runner.agents and runner.agents[0].alive
    stamps: list[tuple[float, object]] = []
    start = time.monotonic()
    async for event in runner.stream(ask("one two three four [slow]")):
        stamps.append((time.monotonic() - start, event))
    text_times = [t for t, e in stamps if isinstance(e, TextDelta)]
    assert text_times[-1] - text_times[0] > 1.0  # 5 chunks 0.3 s apart, delivered as they came
    await runner.aclose()


async def test_second_turn_resumes_the_session_with_only_the_new_message(tmp_path: Path) -> None:
    runner, log = make_runner(tmp_path, sessions=SessionStore())
    first = ChatRequest(messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}])
    answer = (await runner.complete(first)).content
    assert answer.endswith("|<system_instructions>\nBe terse.\n</system_instructions>\n\nhi")
    second = await runner.complete(follow_up(first, answer, "and again", model="model-b"))
    assert second.content == "stand-in/model-b|turn 2|and again"
    prompts = agent_log(log, "session/prompt")
    assert [p["session"] for p in prompts] == [prompts[0]["session"]] * 2
    assert prompts[1]["text"] == "and again"  # only the new message; the system prompt only on the first
    assert [e["value"] for e in agent_log(log, "session/set_config_option")] == ["stand-in/model-b"]
    assert len(agent_log(log, "initialize")) == 1  # one process for both turns
    await runner.aclose()


async def test_unknown_model_is_model_not_found(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, sessions=SessionStore())
    with pytest.raises(ModelNotFound, match="model-a"):
        await runner.complete(ask("hi", model="no-such-model"))
    await runner.aclose()


async def test_two_conversations_interleaved_on_one_process_do_not_cross(tmp_path: Path) -> None:
    runner, log = make_runner(tmp_path, sessions=SessionStore())

    async def talk(name: str) -> list[str]:
        first = ask(f"I am {name} [slow]", conversation=name)
        a1 = (await runner.complete(first)).content
        a2 = (await runner.complete(follow_up(first, a1, f"still {name} [slow]"))).content
        return [a1, a2]

    a, b = await asyncio.gather(talk("alice"), talk("bob"))
    assert a == ["stand-in/model-a|turn 1|I am alice [slow]", "stand-in/model-a|turn 2|still alice [slow]"]
    assert b == ["stand-in/model-a|turn 1|I am bob [slow]", "stand-in/model-a|turn 2|still bob [slow]"]
    prompts = agent_log(log, "session/prompt")
    assert len({p["pid"] for p in prompts}) == 1 and len({p["session"] for p in prompts}) == 2
    # the turns overlapped in time: the second conversation's first prompt came before the first one's reply
    order = [p["text"] for p in prompts]
    assert order.index("I am bob [slow]") < order.index("still alice [slow]")
    await runner.aclose()


async def test_thoughts_become_reasoning_and_meta_usage_is_read(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, sessions=SessionStore())
    events = [e async for e in runner.stream(ask("[think] [metausage]"))]
    assert isinstance(events[0], ReasoningDelta) and events[0].text == "pondering"
    usage = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert len(usage) == 1 and usage[0].input_tokens == len("[think] [metausage]")
    await runner.aclose()


async def test_permission_requests_are_rejected_unless_tools_are_allowed(tmp_path: Path) -> None:
    runner, log = make_runner(tmp_path, sessions=SessionStore())
    assert (await runner.complete(ask("[tool]"))).content == "permission: no"
    assert [e["chosen"] for e in agent_log(log, "permission")] == ["no"]
    await runner.aclose()
    allowed, _ = make_runner(tmp_path / "x", sessions=SessionStore(), allow_tools=True)
    (tmp_path / "x").mkdir(exist_ok=True)
    assert (await allowed.complete(ask("[tool]"))).content == "permission: yes"
    await allowed.aclose()


async def test_error_reply_and_text_error_become_error_kinds(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, sessions=SessionStore())
    with pytest.raises(AuthenticationError, match="Incorrect API key"):
        await runner.complete(ask("[error]"))
    copilot_like = AcpDialect("standin", STANDIN.args, status_text=COPILOT_STATUS)
    runner2, _ = make_runner(tmp_path, dialect=copilot_like, sessions=SessionStore())
    seen: list[object] = []
    with pytest.raises(AuthenticationError, match="401"):
        async for event in runner2.stream(ask("[texterror]")):
            seen.append(event)
    assert seen == []  # the status lines were never passed on as an answer
    # a normal answer through the same dialect still streams
    assert (await runner2.complete(ask("fine"))).content == "stand-in/model-a|turn 1|fine"
    await runner.aclose()
    await runner2.aclose()


async def test_images_go_as_image_blocks(tmp_path: Path) -> None:
    runner, log = make_runner(tmp_path, sessions=SessionStore())
    request = ChatRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": "look"}, ImagePart(data=PNG).model_dump()]}]
    )
    await runner.complete(request)
    assert agent_log(log, "session/prompt")[0]["images"] == ["image/png"]
    with pytest.raises(InvalidRequest, match="URL"):
        await runner.complete(
            ChatRequest(messages=[{"role": "user", "content": [ImagePart(url="https://x/y.png").model_dump()]}])
        )
    await runner.aclose()


async def test_crash_mid_turn_fails_cleanly_then_the_conversation_is_replayed(tmp_path: Path) -> None:
    runner, log = make_runner(tmp_path, sessions=SessionStore())
    first = ask("remember me", conversation="c")
    a1 = (await runner.complete(first)).content
    pid = runner.agents[0].pid
    with pytest.raises(UpstreamError, match=r"exited with code 3|closed its connection"):
        await runner.complete(follow_up(first, a1, "now [crash]"))
    assert not alive(pid)
    # the next turn of the same conversation gets a new process and a new session with the whole history
    again = await runner.complete(follow_up(first, a1, "still there?"))
    assert "turn 1|" in again.content and "remember me" in again.content and "still there?" in again.content
    assert runner.agents[0].pid != pid
    assert len(agent_log(log, "initialize")) == 2
    await runner.aclose()


async def test_disconnect_cancels_the_turn_and_the_process_keeps_serving(tmp_path: Path) -> None:
    runner, log = make_runner(tmp_path, sessions=SessionStore())
    stream = runner.stream(ask("wait [hang]"))
    first = await stream.__anext__()
    assert isinstance(first, TextDelta)
    pid = runner.agents[0].pid
    await stream.aclose()  # the client went away
    assert [e["session"] for e in agent_log(log, "session/cancel")]
    assert alive(pid)
    assert (await runner.complete(ask("next"))).content == "stand-in/model-a|turn 1|next"
    assert runner.agents[0].pid == pid
    await runner.aclose()
    assert not alive(pid)


async def test_a_turn_that_ignores_cancel_gets_its_process_killed(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, sessions=SessionStore(), cancel_grace=0.5)
    stream = runner.stream(ask("wait [stubborn]"))
    await stream.__anext__()
    pid = runner.agents[0].pid
    await stream.aclose()
    assert not alive(pid)
    assert (await runner.complete(ask("next"))).content == "stand-in/model-a|turn 1|next"
    await runner.aclose()


async def test_idle_process_is_stopped_and_restarted_on_demand(tmp_path: Path) -> None:
    runner, log = make_runner(tmp_path, sessions=SessionStore(), idle=0.5)
    await runner.complete(ask("hi"))
    pid = runner.agents[0].pid
    await asyncio.sleep(0.5)
    for _ in range(100):  # stopped about 0.5 s after the turn; allow a loaded machine 10 s
        if not alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not alive(pid)
    assert (await runner.complete(ask("back"))).content.endswith("|back")
    assert len(agent_log(log, "initialize")) == 2
    await runner.aclose()


async def test_mcp_servers_from_config_and_request_reach_session_new(tmp_path: Path) -> None:
    server = {"name": "tools", "command": "/bin/true", "args": [], "env": []}
    runner, log = make_runner(tmp_path, sessions=SessionStore(), mcp_servers=[server])
    extra = {"name": "more", "type": "http", "url": "http://127.0.0.1:1/mcp", "headers": []}
    await runner.complete(ChatRequest(messages=[{"role": "user", "content": "hi"}], extra={"mcp_servers": [extra]}))
    sent = agent_log(log, "session/new")[0]["mcp_servers"]
    assert len(sent) == 2 and "name='tools'" in sent[0] and "name='more'" in sent[1]
    await runner.aclose()


async def test_models_are_what_the_agent_advertises(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, sessions=SessionStore())
    assert [m.id for m in await runner.models()] == ["stand-in/model-a", "stand-in/model-b"]
    await runner.aclose()


async def test_transcript_is_recorded(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, sessions=SessionStore(), transcript=tmp_path / "t.jsonl")
    await runner.complete(ask("hi"))
    await runner.aclose()
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    methods = [line["msg"].get("method") for line in lines if line["dir"] == "client->agent"]
    assert methods == ["initialize", "session/new", "session/prompt"]
    assert any(line["msg"].get("result", {}).get("stopReason") == "end_turn" for line in lines)


async def test_agent_tool_calls_become_agent_tool_events(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, sessions=SessionStore())
    events = [e async for e in runner.stream(ask("[tool]"))]
    tools = [e for e in events if isinstance(e, AgentToolEvent)]
    assert tools == [
        AgentToolEvent("t1", title="rm -rf /tmp/x", kind="execute", status=None),
        AgentToolEvent("t1", title="rm -rf /tmp/x", kind="execute", status="failed"),  # rejected: tools are off
    ]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "permission: no"  # not in the answer
    await runner.aclose()


@pytest.mark.parametrize("closable", [True, False])
async def test_sessions_over_the_limit_are_closed_and_their_conversation_replayed(
    tmp_path: Path, closable: bool
) -> None:
    runner, log = make_runner(tmp_path, sessions=SessionStore(), max_sessions=1)
    if not closable:
        runner.cli.env["ACP_STANDIN_NO_CLOSE"] = "1"
    first = ask("I am alice", conversation="alice")
    a1 = (await runner.complete(first)).content
    await runner.complete(ask("I am bob", conversation="bob"))  # alice's session is the least recently used
    for _ in range(50):
        if not closable or agent_log(log, "session/close"):
            break
        await asyncio.sleep(0.1)
    alice_session = agent_log(log, "session/new")[0]["session"]
    assert [e["session"] for e in agent_log(log, "session/close")] == ([alice_session] if closable else [])
    again = await runner.complete(follow_up(first, a1, "who am I?"))
    assert again.session_id != alice_session
    assert again.content.startswith("stand-in/model-a|turn 1|")  # a new session, the history replayed into it
    assert "I am alice" in again.content and "who am I?" in again.content
    assert len(agent_log(log, "initialize")) == 1  # the same process all along
    await runner.aclose()


async def test_idle_sessions_are_closed(tmp_path: Path) -> None:
    runner, log = make_runner(tmp_path, sessions=SessionStore(), session_idle=0.2)
    await runner.complete(ask("one", conversation="one"))
    await asyncio.sleep(0.3)
    await runner.complete(ask("two", conversation="two"))
    for _ in range(50):
        if agent_log(log, "session/close"):
            break
        await asyncio.sleep(0.1)
    assert [e["session"] for e in agent_log(log, "session/close")] == [agent_log(log, "session/new")[0]["session"]]
    await runner.aclose()


@pytest.mark.parametrize("where", ["stderr", "file"])
async def test_a_retry_loop_seen_in_the_log_ends_the_turn_and_the_process_serves_on(tmp_path: Path, where: str) -> None:
    """OpenCode's way (stderr lines naming the session) and Qwen's (a log file per session): the exec runners'
    RetryWatch reads them per turn; the turn is cancelled with the error they name."""
    if where == "stderr":
        dialect = AcpDialect("standin", STANDIN.args, retry_watch=opencode_watch)
    else:
        logdir = tmp_path / "logs"
        logdir.mkdir()
        dialect = AcpDialect(
            "standin", STANDIN.args, retry_watch=qwen_watch, session_log=lambda _, sid: logdir / f"{sid}.txt"
        )
    runner, log = make_runner(tmp_path, dialect=dialect, sessions=SessionStore())
    if where == "file":
        runner.cli.env["ACP_STANDIN_LOGDIR"] = str(logdir)
        runner.cli.error_deadline = 1.0  # type: ignore[attr-defined]
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="stand-in"):
        await runner.complete(ask("[retrylog]"))
    assert time.monotonic() - started < 30  # 1 s after the first failure; a loaded machine gets slack
    for _ in range(100):  # the cancel goes out beside the caller, who has the error already
        if agent_log(log, "session/cancel"):
            break
        await asyncio.sleep(0.1)
    assert len(agent_log(log, "session/cancel")) == 1
    pid = runner.agents[0].pid
    assert (await runner.complete(ask("next"))).content == "stand-in/model-a|turn 1|next"
    assert runner.agents[0].pid == pid  # the turn stopped on cancel: no kill
    await runner.aclose()
