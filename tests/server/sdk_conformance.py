"""The official SDKs' own generated tests, run against a real ``llm-runners serve``.

The ``openai`` and ``anthropic`` sdists on the package registry ship the tests their generator writes for every
endpoint (``tests/api_resources/…``); they take the server to call from ``TEST_API_BASE_URL`` and validate every
response strictly (``_strict_response_validation=True``, the ``[strict]`` variants, the only ones run here). This
module fetches the sdists of exactly the SDK versions installed (the test extra pins them), never into the repo:

- cache: ``$LLM_RUNNERS_SDK_CACHE``, else ``~/.cache/llm-runners/sdk-conformance``; the sdists are downloaded with
  ``pip download --no-binary :all: --no-deps`` and unpacked there once;
- the SDKs' test tools (:data:`TOOLS`: pytest-asyncio, and what the SDKs' ``conftest.py`` import) go into a venv in
  the cache that sees this interpreter's packages too (a ``.pth``), so the SDKs under test are the installed ones and
  this project's own environment gets no extra pytest plugin.

``scripts/setup`` fills the cache (``python tests/server/sdk_conformance.py --prepare``), since the suite itself runs
with nothing but loopback; a test that finds it empty tries to fill it and fails saying so. Run by
``test_sdk_conformance.py``; ``python tests/server/sdk_conformance.py`` runs it by hand and prints the counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

#: the SDKs' test tools, pinned (versions as the SDKs' own dev lockfiles resolve them on this Python)
TOOLS = ("pytest-asyncio==1.5.0", "rich==15.0.0", "inline-snapshot==0.36.1", "http-snapshot[httpx]==0.1.9")

EXPECTED = Path(__file__).with_name("sdk_expected_failures.toml")


@dataclass(frozen=True)
class Suite:
    sdk: str
    #: the SDK's test files for the endpoints this server serves
    files: tuple[str, ...]
    #: appended to the server's URL for TEST_API_BASE_URL (the OpenAI SDK's base URL includes /v1)
    base_path: str = ""
    plugins: tuple[str, ...] = ()


SUITES = {
    "openai": Suite(
        "openai",
        (
            "tests/api_resources/chat/test_completions.py",
            "tests/api_resources/test_responses.py",
            "tests/api_resources/responses",
            "tests/api_resources/test_models.py",
        ),
        base_path="/v1",
    ),
    "anthropic": Suite(
        "anthropic",
        ("tests/api_resources/test_messages.py", "tests/api_resources/test_models.py"),
        plugins=("-p", "tests._alias_httpx"),  # the SDK's own: respx mocks httpx, the SDK runs on httpx2
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("LLM_RUNNERS_SDK_CACHE") or Path.home() / ".cache/llm-runners/sdk-conformance")


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One preparer at a time (parallel test workers share the cache)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pip(python: str, *args: str) -> None:
    done = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(
            f"pip {' '.join(args)} failed (run scripts/setup, or `python tests/server/sdk_conformance.py --prepare`, "
            f"with a network, to fill {cache_dir()}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )


def sdist(sdk: str) -> Path:
    """The unpacked sdist of the installed version of ``sdk`` (downloaded once into the cache)."""
    version = importlib.metadata.version(sdk)
    root = cache_dir()
    target = root / f"{sdk}-{version}"
    with _locked(root):
        if not (target / "tests" / "api_resources").is_dir():
            downloads = root / "downloads"
            _pip(
                sys.executable,
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"{sdk}=={version}",
                "-d",
                str(downloads),
            )
            archive = downloads / f"{sdk}-{version}.tar.gz"
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
    return target


def tools_python() -> str:
    """The interpreter of the cache's venv: the SDKs' test tools, plus this interpreter's packages."""
    root = cache_dir()
    tag = hashlib.sha256("\n".join((sys.executable, *TOOLS)).encode()).hexdigest()[:12]
    venv = root / f"venv-{tag}"
    python = venv / "bin" / "python"
    with _locked(root):
        if not (venv / ".ready").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
            purelib = sysconfig.get_paths()["purelib"]
            site = Path(
                subprocess.check_output(
                    [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
                ).strip()
            )
            (site / "_outer_env.pth").write_text(f"import site; site.addsitedir({purelib!r})\n")
            _pip(str(python), "install", "--quiet", *TOOLS)
            (venv / ".ready").write_text("\n".join(TOOLS))
    return str(python)


@dataclass
class Outcome:
    """One run of a suite: each test id (``file::Class::test``, the ``[strict]`` suffix dropped) → its outcome
    (``passed``, ``failed``, ``error``, ``skipped``) and the first line of the failure."""

    outcomes: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    output: str = ""

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes.values() if o == outcome)


def run(sdk: str, server_url: str, workdir: Path) -> Outcome:
    """Run ``sdk``'s generated tests for our endpoints (strict variants only) against ``server_url``."""
    suite = SUITES[sdk]
    source = sdist(sdk)
    python = tools_python()
    junit = workdir / f"{sdk}-junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "PYTEST_"))}
    env["TEST_API_BASE_URL"] = server_url + suite.base_path
    done = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "-o",
            "addopts=",  # the SDKs' own: -n auto, durations
            "-p",
            "no:cacheprovider",
            "-p",
            "no:logging",
            *suite.plugins,
            "-q",
            "--tb=line",
            "-k",
            "strict",
            f"--junitxml={junit}",
            *suite.files,
        ],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    result = Outcome(output=done.stdout[-20000:] + done.stderr[-5000:])
    if not junit.exists():
        raise RuntimeError(f"the {sdk} suite did not run (exit {done.returncode}):\n{result.output}")
    for case in ET.parse(junit).iter("testcase"):
        module = (case.get("classname") or "").split(".")
        name = (case.get("name") or "").removesuffix("[strict]")
        test_id = "/".join(module[:-1]) + ".py::" + module[-1] + "::" + name
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = "failed" if tag == "failure" else tag
                result.messages[test_id] = (
                    (element.get("message") or "").splitlines()[0][:300] if element.get("message") else ""
                )
                break
        result.outcomes[test_id] = outcome
    return result


@dataclass(frozen=True)
class Expected:
    pattern: str
    reason: str


def expected_failures(sdk: str) -> list[Expected]:
    """The one list of the tests expected to fail, each pattern (``fnmatch`` over test ids) with its reason."""
    data = tomllib.loads(EXPECTED.read_text())
    return [Expected(p, entry["reason"]) for entry in data.get(sdk, []) for p in entry["tests"]]


def expected_counts(sdk: str) -> dict[str, int]:
    """``{"run": n, "passed": n}`` of ``sdk``'s suite at the pinned version."""
    counts: dict[str, int] = tomllib.loads(EXPECTED.read_text())["counts"][sdk]
    return counts


def compare(sdk: str, result: Outcome) -> list[str]:
    """Every difference between ``result`` and the expected failures: an unexpected failure, an unexpected pass
    (so the list stays true), a pattern that matches no test."""
    problems: list[str] = []
    expected = expected_failures(sdk)
    for test_id, outcome in sorted(result.outcomes.items()):
        matched = [e for e in expected if fnmatchcase(test_id, e.pattern)]
        if outcome != "passed" and not matched:
            problems.append(f"unexpected {outcome}: {test_id}: {result.messages.get(test_id, '')}")
        elif outcome == "passed" and matched:
            problems.append(f"unexpected pass (remove it from {EXPECTED.name}): {test_id} ({matched[0].pattern})")
    for e in expected:
        if not any(fnmatchcase(t, e.pattern) for t in result.outcomes):
            problems.append(f"expected failure matches no test: {e.pattern}")
    counts = {"run": len(result.outcomes), "passed": result.count("passed")}
    if counts != expected_counts(sdk):
        problems.append(f"counts {counts} differ from [counts] in {EXPECTED.name}: {expected_counts(sdk)}")
    return problems


def prepare() -> None:
    """Download and unpack the sdists and build the tools' venv (``scripts/setup`` does it: the suite runs in a
    network namespace with nothing but loopback)."""
    for sdk in SUITES:
        sdist(sdk)
    tools_python()


def main(argv: list[str]) -> int:
    import tempfile

    if argv == ["--prepare"]:
        prepare()
        return 0

    sys.path.insert(0, str(Path(__file__).parent))
    from server_helpers import ServeProcess

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "conformance.toml"
        config.write_text(CONFIG)
        server = ServeProcess(config)
        try:
            url = server.wait_ready()
            status = 0
            for sdk in SUITES:
                result = run(sdk, url, Path(tmp))
                problems = compare(sdk, result)
                print(
                    f"{sdk} {importlib.metadata.version(sdk)}: {len(result.outcomes)} run, {result.count('passed')} "
                    f"passed, {len(result.outcomes) - result.count('passed')} expected failures"
                    + (f", {len(problems)} problems" if problems else "")
                )
                for line in problems:
                    print("  " + line)
                status = status or int(bool(problems))
            return status
        finally:
            server.kill()


#: the server the suites run against: the scripted provider answers every model name
CONFIG = 'default_provider = "scripted"\n\n[providers.scripted.options]\ntype = "scripted"\n'

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
