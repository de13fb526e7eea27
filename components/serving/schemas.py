"""Request bodies of the OpenAI-style routes (pydantic: they are also the OpenAPI schema the fuzz test reads).

Fields follow the OpenAI API; the pair's own controls (`max_images`, `seed`, `guidance_scale`, `steps`,
`size`, and vLLM's `min_tokens`) are extra body fields, which the official client sends with
`extra_body={...}`. Unknown fields are ignored, as OpenAI-compatible servers do; known fields of the wrong
type or out of range are a 400.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SIZE_PATTERN = r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$"


class Controls(BaseModel):
    """What every generating route accepts besides its own fields."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, max_length=256)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    max_images: int | None = Field(None, ge=0, le=16)
    guidance_scale: float | None = Field(None, ge=0, le=30)
    steps: int | None = Field(None, ge=1, le=100)
    size: str | None = Field(None, pattern=SIZE_PATTERN, description="WIDTHxHEIGHT of drawn pictures")
    force_image: bool = Field(False, description="start the answer with a picture")
    max_new_tokens: int | None = Field(None, ge=1, description="KServe V1/V2 requests' output token cap")
    min_tokens: int | None = Field(
        None, ge=0, description="tokens written before the turn may end (vLLM's min_tokens; load tests)"
    )


# --- Responses API -----------------------------------------------------------------------------------


class InputText(BaseModel):
    type: Literal["input_text", "output_text", "text"]
    text: str = Field(max_length=100_000)


class InputImage(BaseModel):
    type: Literal["input_image"]
    image_url: str = Field(max_length=50_000_000)
    detail: str | None = None


ResponseContent = Annotated[InputText | InputImage, Field(discriminator="type")]


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ResponseContent]


class InputImageCall(BaseModel):
    """An earlier answer's picture, sent back as the item the server returned (either vocabulary)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["image_generation_call", "duogen:image_generation_call"]  # OpenAI's, or the spec route's
    result: str = Field(max_length=50_000_000)


# items of a stored conversation (dicts written by an earlier response) read back as request items
INPUT_ITEMS = TypeAdapter(list[InputMessage | InputImageCall])


class ResponsesRequest(Controls):
    """`POST /responses`: the Open Responses `CreateResponseBody` fields. What this server cannot do is
    refused by `refusal()` with the field named, not accepted and ignored."""

    input: str | list[InputMessage | InputImageCall] = Field(min_length=1, max_length=256)
    instructions: str | None = Field(None, max_length=100_000)
    max_output_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    # "required" with the image_generation tool, or {"type": "image_generation"}: the answer starts with a
    # picture (OpenAI's image tool); "none": no picture at all
    tool_choice: Literal["none", "auto", "required"] | dict | None = None
    tools: list[dict] | None = Field(None, max_length=64)
    previous_response_id: str | None = Field(None, max_length=256)
    store: bool | None = None
    background: bool | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    safety_identifier: str | None = Field(None, max_length=256)
    prompt_cache_key: str | None = Field(None, max_length=256)
    text: dict | None = None
    reasoning: dict | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(None, ge=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    service_tier: str | None = Field(None, max_length=32)

    def input_items(self) -> list[InputMessage | InputImageCall]:
        """`input` as a list of items (a string is one user message)."""
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input)]
        return list(self.input)

    def picture_tool(self) -> bool:
        return any(tool.get("type") == "image_generation" for tool in self.tools or [])

    def starts_with_image(self) -> bool:
        choice = self.tool_choice
        forced = (choice == "required" and self.picture_tool()) or (
            isinstance(choice, dict) and choice.get("type") == "image_generation"
        )
        return self.force_image or forced

    def tool_choice_echo(self) -> str | dict:
        return "auto" if self.tool_choice is None else self.tool_choice

    def refusal(self) -> tuple[str, str] | None:
        """(param, message) of the first field asking for what this server does not do, or None."""
        for i, tool in enumerate(self.tools or []):
            if tool.get("type") != "image_generation":
                return f"tools[{i}]", (
                    f"tools of type {tool.get('type')!r} are not supported: this model calls no functions; "
                    "its one tool is image_generation (it draws pictures into its answer)"
                )
        choice = self.tool_choice
        if choice == "required" and not self.picture_tool():
            return "tool_choice", (
                'tool_choice \'required\' needs a tool to call: list {"type": "image_generation"} in tools '
                "(the one tool here: drawing a picture)"
            )
        if isinstance(choice, dict) and choice.get("type") != "image_generation":
            kind = choice.get("type")
            return "tool_choice", f"tool_choice of type {kind!r} is not supported (no function tools)"
        fmt = (self.text or {}).get("format") or {}
        if fmt.get("type", "text") != "text":
            return "text.format", f"text.format {fmt.get('type')!r} is not supported: answers are free text"
        if self.reasoning and any(self.reasoning.get(k) not in (None, "none") for k in ("effort", "summary")):
            return "reasoning", "reasoning is not supported: this model has no separate reasoning channel"
        if self.include:
            return "include", f"include {self.include[0]!r} is not supported (no logprobs or reasoning items)"
        if self.background:
            return "background", "background responses are not supported: stream the response to follow it"
        if self.top_logprobs:
            return "top_logprobs", "logprobs are not supported"
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                return name, f"{name} is not supported (only 0)"
        return None


# --- Chat completions --------------------------------------------------------------------------------


class ChatText(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=100_000)


class ImageURL(BaseModel):
    url: str = Field(max_length=50_000_000)
    detail: str | None = None


class ChatImage(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


ChatContent = Annotated[ChatText | ChatImage, Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ChatContent] | None = None


class ChatRequest(Controls):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=8)
    stop: str | list[str] | None = None
    stream: bool = False


# --- Images --------------------------------------------------------------------------------------------


class ImagesRequest(Controls):
    prompt: str = Field(min_length=1, max_length=32_000)
    n: int = Field(1, ge=1, le=8)
    response_format: Literal["b64_json"] | None = None
    quality: str | None = None
    style: str | None = None
