"""No tests here: the pretext tests' helpers moved to tests/helpers.py (this name stays for
tests/test_seams.py, which imports set_fields from it)."""

from tests.helpers import set_fields

__all__ = ["set_fields"]
