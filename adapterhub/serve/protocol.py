"""Request bodies of every route (pydantic) and the one error shape they all answer with.

Bodies follow OpenAI's and LoRAX/TGI's field names so their clients work
unchanged. Unknown fields are refused (a typo never silently does nothing);
known fields we do not implement are accepted only at their neutral value and
otherwise refused with a plain sentence.

>>> ServeError(404, "no adapter 'x'", code="model_not_found").body()
{'error': {'message': "no adapter 'x'", 'type': 'invalid_request_error', 'code': 'model_not_found'}}
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from .. import errors

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          500: "server_error", 503: "service_unavailable"}


class ServeError(Exception):
    """An error answer: HTTP status, OpenAI's ``{"error": {"message", "type", "code"}}`` body, extra headers."""

    def __init__(self, status: int, message: str, *, code: str | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


def from_exception(error: BaseException) -> ServeError:
    """The HTTP answer for an exception the library raised: its HTTP message, never a traceback or a Python/CLI fix."""
    if isinstance(error, ServeError):
        return error
    message = (error.http_message if isinstance(error, errors.AdapterHubError) else str(error)) or type(error).__name__
    table: list[tuple[type, int, str]] = [
        (errors.UnknownDomainError, 404, "model_not_found"),
        (errors.AdapterNotFoundError, 404, "model_not_found"),
        (errors.HubRepoNotFoundError, 404, "model_not_found"),
        (errors.IntegrityError, 500, "adapter_corrupt"),
        (errors.CorruptFileError, 500, "adapter_corrupt"),
        (errors.IncompatibleBaseError, 400, "incompatible_adapter"),
        (errors.InvalidAdapterError, 400, "invalid_adapter"),
        (errors.TaskMismatchError, 400, "task_mismatch"),
        (errors.SchemaError, 400, "unsupported_schema"),
        (errors.ContractError, 400, "contract_conflict"),
        (errors.MemoryBudgetError, 503, "adapter_capacity"),
        (errors.HubError, 502, "hub_error"),
        (errors.PromotionRefusedError, 409, "promotion_refused"),
        (errors.ConfigError, 400, "invalid_value"),
        (errors.AdapterHubError, 400, "invalid_request"),
    ]
    for kind, status, code in table:
        if isinstance(error, kind):
            return ServeError(status, message, code=code)
    return ServeError(500, f"internal error ({type(error).__name__}); the server logged it and keeps serving",
                      code="internal_error")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


Stop = Union[str, list[str], None]


class _Sampling(_Body):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: Stop = None
    seed: int | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    def unsupported(self) -> list[str]:
        """Plain sentences for every option asked of us that we do not implement."""
        problems = []
        if self.n > 1:
            problems.append(f"n={self.n} is not supported: this server returns one choice per request; "
                            "send n requests (a seed each) instead")
        if self.presence_penalty or self.frequency_penalty:
            problems.append("presence_penalty and frequency_penalty are not supported; leave them at 0")
        if self.logit_bias:
            problems.append("logit_bias is not supported")
        return problems

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ServeError(400, "stop takes up to 4 non-empty strings", code="invalid_value")
        return stops


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: raw text continuation (no chat template)."""

    prompt: Union[str, list[str]]
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> list[str]:
        problems = super().unsupported()
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            problems.append(f"prompt holds {len(self.prompt)} prompts; send one prompt per request")
        if self.echo:
            problems.append("echo is not supported")
        if self.logprobs is not None:
            problems.append("logprobs is not supported on /v1/completions; /generate returns token logprobs")
        if self.best_of not in (None, 1):
            problems.append("best_of > 1 is not supported")
        if self.suffix:
            problems.append("suffix is not supported")
        return problems

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "developer"]
    content: Union[str, list[TextPart]]
    name: str | None = None

    def plain(self) -> dict[str, str]:
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``: rendered with the adapter's own prompt template and chat template."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> list[str]:
        problems = super().unsupported()
        if self.logprobs or self.top_logprobs:
            problems.append("logprobs is not supported on /v1/chat/completions; /generate returns token logprobs")
        if self.tools or self.tool_choice not in (None, "none"):
            problems.append("tools are not supported")
        return problems


class ClassifyRequest(_Body):
    """``POST /v1/classify``: label scoring with a classification adapter (equals ``hub.predict``)."""

    model: str
    input: Union[str, list[str]]
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts:
            raise ServeError(400, "input must hold at least one text", code="invalid_value")
        return texts


class GenerateParameters(_Body):
    """LoRAX/TGI ``parameters`` (the fields lorax-client sends)."""

    adapter_id: str | None = None
    adapter_source: str | None = None
    merged_adapters: dict[str, Any] | None = None
    api_token: str | None = None
    do_sample: bool = False
    max_new_tokens: int | None = Field(default=None, ge=1)
    ignore_eos_token: bool = False
    repetition_penalty: float | None = None
    return_full_text: bool = False
    stop: list[str] = Field(default_factory=list)
    seed: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0)
    top_k: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    truncate: int | None = None
    typical_p: float | None = None
    best_of: int | None = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    return_k_alternatives: int | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> list[str]:
        problems = []
        if self.merged_adapters:
            problems.append("merged_adapters is not supported; name one adapter in adapter_id")
        if self.adapter_source not in (None, "hub", "local"):
            problems.append(f"adapter_source={self.adapter_source!r} is not served; use a registry reference")
        if self.repetition_penalty not in (None, 1.0):
            problems.append("repetition_penalty is not supported")
        if self.typical_p is not None:
            problems.append("typical_p is not supported")
        if self.best_of not in (None, 1):
            problems.append("best_of > 1 is not supported")
        if self.watermark:
            problems.append("watermark is not supported")
        if self.return_k_alternatives:
            problems.append("return_k_alternatives is not supported")
        if self.truncate is not None:
            problems.append("truncate is not supported; send a shorter input")
        if len(self.stop) > 4 or any(not s for s in self.stop):
            problems.append("stop takes up to 4 non-empty strings")
        return problems

    def sampling(self) -> bool:
        return self.do_sample or any(v is not None for v in (self.temperature, self.top_p, self.top_k))


class GenerateRequest(_Body):
    """``POST /generate``, ``/generate_stream`` and ``/`` (TGI's compat route)."""

    inputs: str
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool = False

    def unsupported(self) -> list[str]:
        return self.parameters.unsupported()


class LoadAdapterRequest(_Body):
    """``POST /v1/load_lora_adapter`` (vLLM's names): a registry reference or a folder, served as ``lora_name``."""

    lora_name: str = Field(min_length=1)
    lora_path: str | None = None


class UnloadAdapterRequest(_Body):
    """``POST /v1/unload_lora_adapter``."""

    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None
