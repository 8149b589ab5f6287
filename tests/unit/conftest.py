"""Unit-test configuration.

Hypothesis imports libcst to write a patch file when a property fails, and libcst triggers a
mypy_extensions DeprecationWarning at import; under `filterwarnings = error` that turns a failing
property into a pytest INTERNALERROR. Importing libcst here, with the warning ignored, keeps
failures reported as failures.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import libcst  # noqa: F401
    except ImportError:  # hypothesis then writes no patch files
        pass
