"""The real Kilo Code CLI 7.7.7 (an OpenCode fork) driven through KiloRunner against the fake model API (loopback
only): the OpenCode tests of test_opencode.py, with the ``flavor`` fixture overridden. Kilo starts slowly (~6 s per
run on an idle machine), so only the error cases whose handling differs from OpenCode's run here."""

from __future__ import annotations

import pytest
from opencode_env import KILO, Flavor
from test_opencode import (
    test_answer_system_model_usage_and_the_users_setup,
    test_consumer_that_stops_reading_kills_the_cli,
    test_errors_fail_in_seconds_with_one_request,
    test_hang_times_out_and_kills,
    test_health_and_models,
    test_the_users_instructions_reach_the_model_only_with_user_config,
    test_the_users_login_carries_over,
    test_through_the_server_with_the_openai_sdk,
    test_two_turns_resume_the_cli_session,
    test_unknown_model_is_model_not_found_before_any_request,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def flavor() -> Flavor:
    return KILO


__all__ = [
    "test_answer_system_model_usage_and_the_users_setup",
    "test_consumer_that_stops_reading_kills_the_cli",
    "test_errors_fail_in_seconds_with_one_request",
    "test_hang_times_out_and_kills",
    "test_health_and_models",
    "test_the_users_instructions_reach_the_model_only_with_user_config",
    "test_the_users_login_carries_over",
    "test_through_the_server_with_the_openai_sdk",
    "test_two_turns_resume_the_cli_session",
    "test_unknown_model_is_model_not_found_before_any_request",
]
