import pytest
from hypothesis import HealthCheck, settings

# The machines that run the suite are shared and noisy, and the suite runs on several workers: hypothesis's timing
# checks (a per-example deadline, "too slow" data generation) measure the machine, not the code. Example counts and
# everything hypothesis checks about the data itself stay as each test sets them.
settings.register_profile("shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-machine")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
