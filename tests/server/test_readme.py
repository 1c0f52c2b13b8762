"""Every example in the README, run: the TOML is loaded and built into a router, each command line is parsed by
the parser it is written for, the curl requests and the OpenAI SDK snippet go to a real server (scripted
providers under the README's provider names), scripts and benchmark files exist, and every link stays inside the
repository."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from server_helpers import Served

from llm_runners.cli import build_parser
from llm_runners.config import load_settings
from llm_runners.router import Router
from llm_runners.testing.fake_api.__main__ import build_parser as fake_api_parser
from llm_runners.testing.scripted import ScriptedProvider

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README) if lang == language]


def shell_commands() -> Iterator[list[str]]:
    """Each command of the ``sh`` blocks as argv (continuation lines joined, comments dropped)."""
    for body in blocks("sh"):
        for line in body.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                yield shlex.split(line, comments=True)


def test_the_readme_has_the_examples_this_test_runs() -> None:
    assert len(blocks("toml")) >= 1 and len(blocks("python")) >= 2
    programs = {argv[0] for argv in shell_commands()}
    assert {"llm-runners", "curl", "scripts/serve", "scripts/test", "python", ".venv/bin/python"} <= programs


def test_the_configuration_example_loads_and_builds(tmp_path: Path) -> None:
    (toml,) = blocks("toml")
    path = tmp_path / "llm-runners.toml"
    path.write_text(toml, encoding="utf-8")
    settings = load_settings(str(path), env={})
    assert settings.api_keys and settings.aliases and settings.pricing
    router = Router.from_settings(settings)  # every provider entry builds, every alias resolves
    assert set(router.providers) == set(settings.providers)
    anyio.run(router.aclose)


def test_every_command_line_parses() -> None:
    parsed = 0
    for argv in shell_commands():
        program, args = argv[0], argv[1:]
        if program == "llm-runners":
            build_parser().parse_args(args)
        elif program in ("python", ".venv/bin/python") and args[:2] == ["-m", "llm_runners.testing.fake_api"]:
            fake_api_parser().parse_args(args[2:])
        elif program == ".venv/bin/python":
            assert (ROOT / args[0]).is_file(), args
        elif program.startswith("scripts/"):
            assert (ROOT / program).is_file() and (ROOT / program).stat().st_mode & 0o111, program
        elif program == "curl":
            continue  # run against a server below
        else:
            raise AssertionError(f"a README command no test covers: {argv}")
        parsed += 1
    assert parsed >= 8


def _readme_server(serve: Callable[..., Served]) -> Served:
    names = ("claude_code", "codex", "gemini")
    providers = {name: ScriptedProvider(["Hi!"], name=name, default_model="sonnet") for name in names}
    return serve(providers, default="claude_code")


def test_the_curl_examples_answer(serve: Callable[..., Served]) -> None:
    s = _readme_server(serve)
    ran = 0
    for argv in shell_commands():
        if argv[0] != "curl":
            continue
        url = next(a for a in argv if a.startswith("http://"))
        body = json.loads(argv[argv.index("-d") + 1])
        answer = httpx2.post(url.replace("http://127.0.0.1:8080", s.url), json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        payload = answer.json()
        if isinstance(body["model"], list):
            assert payload["object"] == "multiplex" and [r["status"] for r in payload["results"]] == [200] * 3
        else:
            assert payload["choices"][0]["message"]["content"] == "Hi!"
        ran += 1
    assert ran == 2


def test_the_openai_sdk_snippet_streams(serve: Callable[..., Served]) -> None:
    s = _readme_server(serve)
    snippet = next(b for b in blocks("python") if "from openai import OpenAI" in b)
    assert "http://127.0.0.1:8080/v1" in snippet
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet.replace("http://127.0.0.1:8080/v1", s.v1), "README.md", "exec"), {})
    assert out.getvalue() == "Hi!"


def test_the_library_snippet_compiles_and_names_what_exists() -> None:
    """The library example drives the real claude (tests/e2e run the same calls); here: it compiles and every
    name it imports exists."""
    snippet = next(b for b in blocks("python") if "runner_class" in b)
    compile(snippet, "README.md", "exec")
    for module, names in re.findall(r"^from ([\w.]+) import (.+)$", snippet, re.M):
        imported = __import__(module, fromlist=["_"])
        for name in names.split(","):
            assert hasattr(imported, name.strip()), (module, name)


@pytest.mark.parametrize("target", sorted(set(re.findall(r"\]\(([^)\s]+)\)", README))) or ["(none)"])
def test_links_stay_inside_the_repository(target: str) -> None:
    if target == "(none)":
        return
    assert "://" not in target and not target.startswith("/"), target
    resolved = (ROOT / target.split("#")[0]).resolve()
    assert resolved.is_relative_to(ROOT) and resolved.exists(), target


def test_no_path_outside_the_repository_is_referred_to() -> None:
    assert "../" not in README
