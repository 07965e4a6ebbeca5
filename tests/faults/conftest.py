"""The fault ring runs against the same embedded stack as the end-to-end ring."""

from tests.e2e.conftest import stack  # noqa: F401 - the session fixture, shared
