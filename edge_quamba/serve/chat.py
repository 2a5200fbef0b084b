"""Chat messages -> the prompt text a model continues.

Where the template comes from, first found wins:
  1. ``serve --chat-template FILE`` (a Jinja template file);
  2. the model folder's ``chat_template.jinja`` (as transformers >= 4.43 saves it);
  3. the ``chat_template`` key of the model folder's ``tokenizer_config.json`` (a string, or a list of named templates
     of which "default" is used);
  4. otherwise the PLAIN template below. The demo models are base models with no template, and so is any folder
     edge-quamba writes (quantized and export folders keep tokenizer.json only): pass --chat-template for those.

A Jinja template is rendered the way transformers' ``apply_chat_template`` does: in Jinja's immutable sandbox, with
``messages`` (role and content strings), ``add_generation_prompt=True``, ``bos_token``, ``eos_token`` and a
``raise_exception(message)`` function (a template that raises refuses the request with a 400).

The PLAIN template, for base models: each message as ``Role: content`` followed by a blank line, roles spelled
System (system and developer messages), User and Assistant, then ``Assistant:`` for the model to continue::

    System: You are terse.

    User: Name a prime.

    Assistant:

With it, ``"\\nUser:"`` is added to the request's stop sequences, so a base model that goes on to write the user's
next turn stops there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_quamba.errors import ConfigError
from edge_quamba.models.config import read_json
from edge_quamba.paths import require_regular_file
from edge_quamba.serve.errors import APIError

PLAIN = "plain"
PLAIN_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
PLAIN_STOP = "\nUser:"


@dataclass(frozen=True)
class ChatTemplate:
    """source: "plain" or the file the Jinja template came from; compiled: the jinja2 Template (None: plain)."""

    source: str
    compiled: object | None = None
    bos_token: str = ""
    eos_token: str = ""

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop sequences every chat request gets (the plain template's next user turn)."""
        return (PLAIN_STOP,) if self.compiled is None else ()

    def render(self, messages: list[dict[str, str]]) -> str:
        """messages: [{"role": ..., "content": text}] -> the prompt text."""
        if self.compiled is None:
            turns = [f"{PLAIN_ROLES[m['role']]}: {m['content']}\n\n" for m in messages]
            return "".join(turns) + "Assistant:"
        from jinja2 import TemplateError

        try:
            return self.compiled.render(messages=messages, add_generation_prompt=True, bos_token=self.bos_token,
                                        eos_token=self.eos_token)
        except TemplateError as exc:  # undefined names, sandbox violations: it cannot take these messages
            raise APIError(400, f"the model's chat template cannot render these messages: {exc}",
                           param="messages") from None


def _token_text(value) -> str:
    """tokenizer_config.json writes special tokens as a string or as {"content": string, ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def load_chat_template(model_dir: Path, override: str | None = None) -> ChatTemplate:
    """The chat template for ``model_dir`` (see the module docstring for the order)."""
    config_file = model_dir / "tokenizer_config.json"
    config = {}
    if config_file.is_file():
        config = read_json(config_file)
    tokens = {"bos_token": _token_text(config.get("bos_token")), "eos_token": _token_text(config.get("eos_token"))}
    if override is not None:
        require_regular_file(override, f"--chat-template {override}", ConfigError)
    file = Path(override) if override is not None else model_dir / "chat_template.jinja"
    if file.is_file():
        return ChatTemplate(str(file), _compile(file.read_text(encoding="utf-8"), str(file)), **tokens)
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str):
        return ChatTemplate(str(config_file), _compile(template, str(config_file)), **tokens)
    return ChatTemplate(PLAIN)


def _compile(template: str, where: str):
    """The template compiled once, at start-up: a broken one is a one-line error then, not a failure per request."""
    from jinja2 import TemplateSyntaxError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise APIError(400, f"the model's chat template refused the messages: {message}", param="messages")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except TemplateSyntaxError as exc:
        raise ConfigError(f"{where}: the chat template is not valid Jinja: {exc.message} (line {exc.lineno})") from None
