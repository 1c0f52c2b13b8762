"""Images through the real Qwen Code and OpenCode (exec transport) against the fake model API: the upstream request
carries the image the caller sent (an ``image_url`` data URL with its bytes), the CLI's tools stay off (no ``tools``
declared upstream, nothing written) and the answer comes back. Kilo's exec transport takes no images (its
``read`` permission would have to be allowed, which offers the model the ``read`` tool): checked here too.

OpenCode sends an image only for a model whose ``modalities.input`` includes ``image``: the user's config declares
it here, as a user of a vision model would (the CLI's catalogue models carry it already)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opencode_env import KILO, OPENCODE, Flavor, write_user_config
from qwen_env import qwen_env

from llm_runners.runners.base import CLIRunner
from llm_runners.runners.qwen import QwenRunner
from llm_runners.testing.fake_api import FakeModelAPI
from llm_runners.types import ChatRequest, ImagePart

pytestmark = pytest.mark.anyio

#: a 1x1 PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def image_urls(body: dict[str, Any]) -> list[str]:
    urls = []
    for message in body.get("messages") or []:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = part.get("image_url")
                urls.append(str(url.get("url") if isinstance(url, dict) else url))
    return urls


def vision_user_config(flavor: Flavor, home: Path, base_url: str) -> None:
    path = write_user_config(flavor, home, base_url)
    config = json.loads(path.read_text())
    config["provider"]["fake"]["models"]["fake-model"].update(
        {"attachment": True, "modalities": {"input": ["text", "image"], "output": ["text"]}}
    )
    path.write_text(json.dumps(config))


def make(name: str, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Callable[[str], Path]) -> CLIRunner:
    if name == "qwen":
        env = qwen_env(tmp_home.env(), fake_api.openai_base_url)
        return QwenRunner(binary=str(cli_bin("qwen")), env=env, timeout=120.0)
    flavor = {"opencode": OPENCODE, "kilo": KILO}[name]
    vision_user_config(flavor, tmp_home.home, fake_api.openai_base_url)
    return flavor.runner(binary=str(cli_bin(flavor.cli)), env=tmp_home.env(), timeout=120.0)


@pytest.mark.parametrize("name", ["qwen", "opencode"])
async def test_the_upstream_request_carries_the_image_and_tools_stay_off(
    name: str, tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Callable[[str], Path]
) -> None:
    runner = make(name, tmp_home, fake_api, cli_bin)
    assert runner.capabilities.images
    fake_api.default_reply = "a single pixel"
    content = [{"type": "text", "text": "what is in this image?"}, ImagePart(data=PNG)]
    request = ChatRequest(messages=[{"role": "user", "content": content}])
    response = await runner.complete(request)
    assert response.content == "a single pixel"
    body = fake_api.last_main_request().body
    assert image_urls(body) == [DATA_URL]
    assert not body.get("tools")  # the attachment is read by the CLI itself; the model gets no tool
    assert "what is in this image?" in json.dumps(body)
    assert list(runner.workdir.iterdir()) == [] or name == "qwen"  # nothing written (Qwen keeps its own files)
    await runner.aclose()


def test_kilo_exec_takes_no_images_and_keeps_every_permission_denied(
    tmp_home: Any, fake_api: FakeModelAPI, cli_bin: Callable[[str], Path]
) -> None:
    runner = make("kilo", tmp_home, fake_api, cli_bin)
    assert not runner.capabilities.images
    content = [{"type": "text", "text": "what is in this image?"}, ImagePart(data=PNG)]
    turn = runner._turn(ChatRequest(messages=[{"role": "user", "content": content}]), None, 0)
    invocation = runner.invocation(turn)
    config = json.loads(Path(invocation.env["KILO_CONFIG"]).read_text())
    assert "-f" not in invocation.argv
    assert config["permission"]["read"] == "deny" and config["permission"]["external_directory"] == "deny"
    shutil.rmtree(turn.assets)
