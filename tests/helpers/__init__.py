"""What the tests share besides ``tests/conftest.py``: import it as ``tests.helpers.<module>``.

Fixtures defined here (``peft_adapters``, ``serving``) are registered once in ``tests/conftest.py``
(``pytest_plugins``): test modules request them by name and never import them.
"""
