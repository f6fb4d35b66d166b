"""The one exception hierarchy of adapterhub.

Every failure a user can cause is an :class:`AdapterHubError` whose message
names the bad input and says how to fix it. Each class also inherits the
closest built-in exception, so ``except LookupError`` or
``except FileNotFoundError`` keeps working for callers who don't know ours.

>>> from adapterhub.errors import AdapterNotFoundError
>>> try:
...     raise AdapterNotFoundError("no adapter 'legal@9' in registry; run `adapterhub registry list`")
... except LookupError as e:
...     print(type(e).__name__)
AdapterNotFoundError
"""

from __future__ import annotations


class AdapterHubError(Exception):
    """Root of every error adapterhub raises on purpose.

    An error carries one message and a fix per audience, and each surface shows its own:
    ``str(error)`` (Python callers), :attr:`cli_message` (the ``adapterhub`` command) and
    :attr:`http_message` (the HTTP server's error body). A fix names what that audience can
    do: a call for Python, a flag or verb for the command line, what to send for HTTP.

    Args:
        message: what went wrong, worded for any caller.
        fix: how a Python caller fixes it (``hub.load(...)``, ``data=``); appended to ``str(error)``.
        cli_fix: how a command-line user fixes it (a flag, another ``adapterhub`` verb); the
            ``adapterhub`` command prints :attr:`cli_message`, which uses it in place of ``fix``.
        http_fix: what an HTTP client can do (what to send, which route lists the choices); a
            class may set a default. An HTTP client never sees ``fix`` or ``cli_fix``.

    >>> error = AdapterHubError("no adapter 'x'", fix="load it with hub.load('./x')", cli_fix="pass --domain ./x",
    ...                         http_fix="send a model GET /v1/models lists")
    >>> str(error)
    "no adapter 'x'; load it with hub.load('./x')"
    >>> error.cli_message
    "no adapter 'x'; pass --domain ./x"
    >>> error.http_message
    "no adapter 'x'; send a model GET /v1/models lists"
    """

    http_fix: str | None = None  # a class's default for :attr:`http_message`

    def __init__(self, message: str = "", *args: object, fix: str | None = None, cli_fix: str | None = None,
                 http_fix: str | None = None) -> None:
        self.message, self.fix, self.cli_fix = message, fix, cli_fix
        if http_fix is not None:
            self.http_fix = http_fix
        super().__init__(_joined(message, fix), *args)

    @property
    def cli_message(self) -> str:
        """The message for a command-line user: the CLI fix when one was given, else ``str(self)``."""
        if self.cli_fix is None:
            return str(self)
        return _joined(self.message, self.cli_fix)

    @property
    def http_message(self) -> str:
        """The message for an HTTP client: the HTTP fix when there is one, else the bare message."""
        return _joined(self.message, self.http_fix)


def _joined(message: str, fix: str | None) -> str:
    return f"{message}; {fix}" if fix else message


_MODELS_HINT = "send as model one of the ids GET /v1/models lists"


# --- bad configuration or arguments -----------------------------------------
class ConfigError(AdapterHubError, ValueError):
    """An argument or configuration value is invalid."""


class InvalidNameError(ConfigError):
    """An adapter name, version or reference is malformed."""


class RecipeError(ConfigError):
    """A training recipe is invalid (unknown key, wrong type, bad value)."""


class SchemaError(ConfigError):
    """A response JSON schema is malformed, too large, or uses a feature constrained decoding does not support."""

    http_fix = "send a JSON schema without that feature (README \"Structured output\" lists what is supported)"


class ContractError(ConfigError):
    """A request contradicts the adapter's serving contract, or a contract value is invalid."""


class DataError(AdapterHubError, ValueError):
    """Training or evaluation data is missing, empty or inconsistent."""


# --- base models --------------------------------------------------------------
class BaseModelError(AdapterHubError):
    """A base model cannot be resolved or loaded."""


class UnknownBaseError(BaseModelError, LookupError):
    """The name is neither a known alias, a local directory nor a Hub id."""


class BaseNotFoundError(BaseModelError, FileNotFoundError):
    """A local base model path does not exist or lacks model files."""


class QuantizationError(BaseModelError, ValueError):
    """The requested quantization is unknown or unsupported on this device."""


class FetchError(BaseModelError, ConnectionError):
    """Downloading the embedded default base failed."""


class CorruptFileError(AdapterHubError, OSError):
    """A file's checksum or structure does not match what was recorded."""


# --- registry -----------------------------------------------------------------
class RegistryError(AdapterHubError):
    """A registry operation failed."""


class AdapterNotFoundError(RegistryError, LookupError):
    """No adapter matches the given reference."""

    http_fix = _MODELS_HINT


class PromotionRefusedError(RegistryError, RuntimeError):
    """A promotion, canary or rollback was refused (gate failed, another one running or won); nothing changed."""

    http_fix = "GET /v1/adapters/<name>/history shows the channel's moves"


class InvalidAdapterError(RegistryError, ValueError):
    """An adapter directory is malformed, pickle-only or of an unknown method."""


class IntegrityError(RegistryError, CorruptFileError):
    """A registered file was tampered with or truncated.

    With ``ref`` (the damaged entry) each audience is told how to replace it, unless a fix is given.

    >>> error = IntegrityError("legal@1: weights do not match their sha256", ref="legal@1")
    >>> error.cli_message.endswith("remove it with `adapterhub registry rm legal@1` and import the adapter again")
    True
    >>> "registry.remove('legal@1')" in str(error) and "adapterhub" not in str(error)
    True
    """

    http_fix = ("the server's stored copy of this adapter is damaged: other models are still served, and this one "
                "is served again once the server's operator imports it again")

    def __init__(self, message: str = "", *args: object, ref: str | None = None, **fixes: str | None) -> None:
        if ref is not None:
            fixes.setdefault("fix", f"remove it with registry.remove({ref!r}) and add the adapter again "
                                    "(registry.add(folder, name))")
            fixes.setdefault("cli_fix", f"remove it with `adapterhub registry rm {ref}` and import the adapter again")
        super().__init__(message, *args, **fixes)


class IndexLostError(RegistryError, OSError):
    """The index is missing, empty or damaged while version folders exist; ``adapterhub registry rebuild-index``."""


class ReadOnlyRegistryError(RegistryError, PermissionError):
    """A write to a registry whose folder is read-only (reading it works)."""


class StorageError(AdapterHubError, OSError):
    """A file could not be written (disk full, read-only or unwritable path); nothing half-written is left."""


class IncompatibleBaseError(AdapterHubError, ValueError):
    """An adapter does not fit the base model (modules, shapes or fingerprint)."""


# --- training -----------------------------------------------------------------
class TrainingError(AdapterHubError, RuntimeError):
    """Training failed (NaN loss, interruption, ...); nothing was registered."""


class BelowBaselineError(TrainingError):
    """A trained classifier does not beat chance or the bare base by ``output.min_gain``; it was kept in its
    run folder, not registered."""


# --- runtime ------------------------------------------------------------------
class UnknownDomainError(AdapterHubError, LookupError):
    """A domain/adapter name is neither resident nor registered."""

    http_fix = _MODELS_HINT


class MemoryBudgetError(AdapterHubError, MemoryError):
    """An adapter does not fit the configured residency budget."""


class TaskMismatchError(AdapterHubError, ValueError):
    """An operation does not fit the adapter's task (e.g. predict on a generation adapter)."""

    http_fix = "send a model whose task fits this route (GET /v1/models gives each resident model's task)"


class RoutingError(AdapterHubError, ValueError):
    """``domain="auto"`` could not choose: bad router input, no candidate left, or ``fallback="error"`` refused a row."""


class StaleRouterError(RoutingError, LookupError):
    """A router's adapters were removed or replaced by a newer version since it was built; rebuild it."""


class AdapterInUseError(AdapterHubError, RuntimeError):
    """An adapter cannot be unloaded or replaced while a running call uses it; retry after the call returns."""


# --- Hugging Face Hub -----------------------------------------------------------
class HubError(AdapterHubError):
    """Talking to the Hugging Face Hub failed."""


class HubRepoNotFoundError(HubError, LookupError):
    """The repository does not exist (or is private and no token was given)."""


class HubRevisionNotFoundError(HubError, LookupError):
    """The branch, tag or commit does not exist in the repository."""


class HubFileNotFoundError(HubError, FileNotFoundError):
    """A file the adapter needs is missing from the repository."""


class HubPermissionError(HubError, PermissionError):
    """The token lacks the rights for this operation."""


class HubConnectionError(HubError, ConnectionError):
    """The Hub endpoint is unreachable (or offline mode forbids the request)."""


class HubNotAnAdapterError(HubError, InvalidAdapterError):
    """The repository holds no PEFT adapter (no ``adapter_config.json`` at its root)."""


class HubPickleWeightsError(HubError, InvalidAdapterError):
    """The repository's adapter weights exist only as pickle (``.bin``); adapterhub loads safetensors only."""


class HubInvalidAdapterError(HubError, InvalidAdapterError):
    """The repository's adapter files or ``adapterhub.json`` are malformed; nothing was registered."""


class HubIncompatibleBaseError(HubError, IncompatibleBaseError):
    """The repository's adapter was made for another base model."""
