"""``Capabilities.verified``: True exactly for the runners whose CLI is pinned and driven for real here, and shown
by ``llm-runners providers`` (text and JSON) and the server's ``/ready`` listing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_runners.acp import DIALECTS, AcpRunner
from llm_runners.cli import main
from llm_runners.router import Router
from llm_runners.runners import REGISTRY
from llm_runners.testing.scripted import FULL_CAPABILITIES, ScriptedProvider

ROOT = Path(__file__).resolve().parents[1]
PINNED = set(json.loads((ROOT / "tests/clis/package.json").read_text(encoding="utf-8"))["dependencies"])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_runner_is_verified_exactly_when_its_cli_is_pinned_for_the_e2e_tests(name: str) -> None:
    cls = REGISTRY[name]
    assert cls.capabilities.verified is (cls.package in PINNED), (name, cls.package)


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_the_acp_transport_is_as_verified_as_its_cli(name: str, tmp_path: Path) -> None:
    runner = AcpRunner(name, cwd=str(tmp_path))
    assert runner.capabilities.verified is REGISTRY[name].capabilities.verified
    assert runner.capabilities.token_streaming is DIALECTS[name].token_streaming  # the other override survives


@pytest.mark.anyio
async def test_the_servers_provider_listing_says_which_provider_is_verified() -> None:
    proven = ScriptedProvider(name="proven", capabilities=FULL_CAPABILITIES.model_copy(update={"verified": True}))
    router = Router({"proven": proven, "unproven": ScriptedProvider(name="scripted")}, default="proven")
    try:
        by_name = {h.provider: h for h in await router.health()}
    finally:
        await router.aclose()
    assert (by_name["proven"].verified, by_name["unproven"].verified) == (True, False)


def _config(tmp_path: Path) -> Path:
    """Every registry runner at a binary that does not exist (no CLI runs), plus a scripted provider."""
    lines = ['[providers.echo.options]\ntype = "scripted"\n']
    for name in REGISTRY:
        lines.append(f'[providers.{name}.options]\nbinary = "{tmp_path / "absent" / name}"\n')
    path = tmp_path / "c.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_providers_shows_verified_in_text_and_json(tmp_path: Path, capsys: Any) -> None:
    config = _config(tmp_path)
    assert main(["providers", "--json", "--config", str(config)]) == 0
    listed = {h["provider"]: h for h in json.loads(capsys.readouterr().out)}
    assert set(listed) == {*REGISTRY, "echo"}
    for name, cls in REGISTRY.items():
        assert listed[name]["verified"] is cls.capabilities.verified, name
        assert listed[name]["installed"] is False and listed[name]["fix"], name  # absent: how to install it
    assert listed["echo"]["verified"] is False

    assert main(["providers", "--config", str(config)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")}
    for name, cls in REGISTRY.items():
        assert rows[name][:4] == [name, "not", "found", "-"], rows[name]
        assert rows[name][4] == ("verified" if cls.capabilities.verified else "unverified"), rows[name]
    assert rows["echo"][1] == "ready" and rows["echo"][3] == "unverified", rows["echo"]
