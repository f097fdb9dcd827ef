"""llm2llm-engine: iterative, error-driven data synthesis on Ray.

Importing this package must stay cheap: no torch, vLLM, DeepSpeed or transformers at import time
(tests/unit/test_import_hygiene.py enforces it). Heavy libraries are imported inside the
functions and Ray actors that need them.
"""

__version__ = "0.1.0"
