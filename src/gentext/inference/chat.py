"""Chat messages as the text a run continues: the transcript template.

A gentext run is a language model of some text, not an instruction-tuned assistant, so a chat is
rendered as a transcript of that text's kind and the model writes the next turn:

    {system content}          (a system message, if any, then a blank line)

    User: {content}           (each turn: its speaker's name, a colon, the content, a newline)
    Assistant: {content}
    User: {content}
    Assistant:                (the turn the model writes)

and generation stops where the next speaker's turn would begin ("\\nUser:"), unless the request
gives its own stop strings. A run may override any part with a `chat.json` in its directory:
{"system": "{content}\\n\\n", "turn": "{name}: {content}\\n", "reply": "{name}:",
 "names": {"user": "User", "assistant": "Assistant"}, "stop": ["\\nUser:"]} — a play might name its
speakers "ROMEO" and "JULIET". A pretrained model folder whose tokenizer has a chat template uses
that template instead (transformers' `apply_chat_template`), stopping at its end-of-turn token.
Conditional runs take the last user message as their condition: a seq2seq run translates it, a
captioner captions the picture it carries; a labelled run takes the request's label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from gentext.errors import GentextError


@dataclass
class ChatTemplate:
    system: str = "{content}\n\n"
    turn: str = "{name}: {content}\n"
    reply: str = "{name}:"
    names: dict[str, str] = field(default_factory=lambda: {"user": "User", "assistant": "Assistant"})
    stop: list[str] | None = None  # default: the next user turn

    @classmethod
    def of_run(cls, run_dir: Path | None) -> ChatTemplate:
        """The run's own template (`chat.json` beside its config), else the default."""
        path = None if run_dir is None else Path(run_dir) / "chat.json"
        if path is None or not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise GentextError(f"{path}: not a chat template ({exc})") from None

    def name(self, role: str) -> str:
        return self.names.get(role, role.capitalize())

    def render(self, messages: list[dict]) -> tuple[str, list[str]]:
        """The transcript to continue and the stop strings that end the reply."""
        parts = []
        for message in messages:
            content = message["content"]
            if message["role"] in ("system", "developer"):
                parts.append(self.system.format(content=content))
            else:
                parts.append(self.turn.format(name=message.get("name") or self.name(message["role"]), content=content))
        parts.append(self.reply.format(name=self.name("assistant")))
        turn = self.turn.split("{content}")[0].format(name=self.name("user")).rstrip()  # "User:"
        stop = self.stop if self.stop is not None else ["\n" + turn]
        return "".join(parts), stop


def transcript(textmodel, messages: list[dict]) -> tuple[str, list[str]]:
    """(prompt, default stop strings) for a language-model run: its tokenizer's chat template
    where a pretrained folder has one, else the run's transcript template."""
    rendered = _pretrained_template(textmodel, messages)
    if rendered is not None:
        return rendered
    return ChatTemplate.of_run(textmodel.run_dir).render(messages)


def _pretrained_template(textmodel, messages: list[dict]) -> tuple[str, list[str]] | None:
    folder = textmodel.run_dir
    config = None if folder is None else Path(folder) / "tokenizer_config.json"
    if config is None or not config.is_file() or "chat_template" not in config.read_text(encoding="utf-8"):
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt, [tokenizer.eos_token] if tokenizer.eos_token else []
