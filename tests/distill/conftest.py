"""Fixtures of the distillation tests: one torch thread (batches: distill_batches.py)."""
import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every distillation test runs with one torch thread (``one_thread`` of tests/conftest.py)."""
