"""A pretrained causal language model (GPT-2 first; anything `AutoModelForCausalLM` loads) behind
the same contract as every other kind, backed by Hugging Face `transformers` (the `hf` extra).

Where it comes from: a local folder in Hugging Face format (config.json + *.safetensors +
tokenizer files), or a model id already in the local Hugging Face cache. Nothing is downloaded:
a missing model is one line that says where it was looked for and how to fetch it elsewhere.
Weights are read from safetensors only (never a pickle); the tokenizer is the model's own
(`tokenizer.json` through `tokenizers`, the byte-level BPE gentext already speaks).

The state is the model's KV cache, a `State` like any other (models/state.py):
    k<i>, v<i>  (B, kv_heads, L, head_dim) for layer i; batch dimension 0
    ids         (B, L) the tokens the cache holds; batch dimension 0
so sampling, beams, streaming, scoring and the server need nothing new. Learned absolute
positions cannot slide as rotary ones do, so when the cache is full (`context` tokens) its last
half is encoded afresh at positions 0..context/2 and generation goes on: long texts are scored
with a sliding window of stride context/2, and generation never hits a wall.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gentext.config import ModelConfig, TokenizerConfig
from gentext.errors import GentextError
from gentext.models.state import State
from gentext.runconfig import RunConfig

EXTRA = "pip install 'gentext[hf]'"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise GentextError(f"pretrained models need Hugging Face transformers: {EXTRA}") from None
    transformers.logging.set_verbosity_error()  # config notes are not the user's business
    transformers.utils.logging.disable_progress_bar()  # nor a bar for loading a few files
    return transformers


def is_pretrained_folder(path: Path) -> bool:
    """A Hugging Face model folder (config.json with a model_type), not a gentext run."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" in config and "format_version" not in config


def cached(name: str) -> Path | None:
    """The local Hugging Face cache's copy of model id `name`, if there is one (never the network)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 -- not installed, not an id, not cached: all mean "not here"
        return None


def not_found(name: str) -> str:
    """What to say when `name` is neither a run, a model folder, nor a cached model id (a model id is
    NAME or ORG/NAME; anything else was meant as a path)."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        return f"{name}: no such run directory"
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return f"{name}: no such run directory (a pretrained model: a local folder, or an id with {EXTRA})"
    return (
        f"{name}: no such run directory, nor a model {name!r} in the local Hugging Face cache ({HF_HUB_CACHE}); "
        f"gentext never downloads: on a connected machine run `huggingface-cli download {name}` and copy the "
        "folder (or the cache) here"
    )


def locate(name: str) -> Path:
    """A local Hugging Face model folder, or a model id found in the local cache."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not is_pretrained_folder(path):
            raise GentextError(f"{path}: neither a gentext run nor a Hugging Face model folder (config.json)")
        return path
    found = cached(name)
    if found is None:
        raise GentextError(not_found(name))
    return found


class PretrainedLM(nn.Module):
    carries_state = False  # fine-tuning reads independent windows, as the Transformer kind does

    @staticmethod
    def default_window(config: ModelConfig, seq_len: int) -> int:
        """Fine-tuning windows: up to 128 tokens, a CPU's share of the model's context."""
        return min(config.context, 128)

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not config.hf_config:
            raise GentextError("a pretrained model needs its Hugging Face config (hf_config)")
        transformers = _transformers()
        self.config = config
        hf_config = transformers.AutoConfig.for_model(config.hf_config["model_type"]).__class__.from_dict(
            config.hf_config
        )
        self.hf = transformers.AutoModelForCausalLM.from_config(hf_config)
        if config.dropout is not None:  # the run's dropout (chosen from planned passes) replaces the model's
            for module in self.hf.modules():
                if isinstance(module, nn.Dropout):
                    module.p = config.dropout
        self.context = config.context
        parameters = inspect.signature(self.hf.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"  # transformers 5 / 4

    # -- the state contract -------------------------------------------------------------------------
    def _dims(self) -> dict[str, int]:
        return {"ids": 0, **{f"{kv}{i}": 0 for i in range(self.config.num_layers) for kv in "kv"}}

    def initial_state(self, batch: int, device=None, condition=None) -> State:
        """An empty cache."""
        if condition is not None:
            raise GentextError("this model was not trained with a condition")
        device = device if device is not None else next(self.parameters()).device
        text = self.hf.config.get_text_config()
        heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        empty = torch.zeros(batch, heads, 0, head_dim, device=device)
        tensors = {name: empty.clone() for name in self._dims() if name != "ids"}
        return State({"ids": torch.zeros(batch, 0, dtype=torch.long, device=device), **tensors}, self._dims())

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> State:
        if set(tensors) != set(self._dims()):
            raise GentextError(f"a pretrained model's state has tensors {sorted(self._dims())}, got {sorted(tensors)}")
        return State(dict(tensors), self._dims())

    # -- the model interface ----------------------------------------------------------------------
    def _step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids (B, T) with the cache (its length + T <= context) -> logits (B, T, V) and the new state."""
        from transformers import DynamicCache

        cached = state.tensors["ids"].shape[1]
        cache = DynamicCache()
        for i in range(self.config.num_layers):
            if cached:
                cache.update(state.tensors[f"k{i}"], state.tensors[f"v{i}"], i)
        positions = torch.arange(cached, cached + ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        out = self.hf(input_ids=ids, position_ids=positions, use_cache=True, **{self._cache_arg: cache})
        layers = out.past_key_values.layers
        new = {"ids": torch.cat([state.tensors["ids"], ids], dim=1)}
        for i, layer in enumerate(layers):
            k, v = layer.keys.float(), layer.values.float()
            new[f"k{i}"], new[f"v{i}"] = (k.detach(), v.detach()) if self.training else (k, v)
        return out.logits, State(new, self._dims())

    def _reprime(self, state: State) -> State:
        """The last half of a full cache, encoded afresh from position 0."""
        keep = state.tensors["ids"][:, -(self.context // 2) :]
        empty = self.initial_state(keep.shape[0], keep.device)
        return self._step(keep, empty)[1]

    def forward(
        self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V) and the cache after them; with `targets`, log P(targets) (B, T)."""
        state = state if state is not None else self.initial_state(ids.shape[0], ids.device)
        pieces, start = [], 0
        while start < ids.shape[1]:
            if state.tensors["ids"].shape[1] >= self.context:
                state = self._reprime(state)
            room = self.context - state.tensors["ids"].shape[1]
            logits, state = self._step(ids[:, start : start + room], state)
            pieces.append(logits)
            start += room
        logits = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
        if targets is None:
            return logits, state
        logp = -F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        return logp.view_as(targets), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def model_config(hf_config) -> ModelConfig:
    """gentext's description of a Hugging Face config (the sizes shown by `gentext info`)."""
    text = hf_config.get_text_config()
    context = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None) or 1024
    return ModelConfig(
        kind="pretrained",
        vocab_size=text.vocab_size,
        embed_size=text.hidden_size,
        hidden_size=text.hidden_size,
        num_layers=text.num_hidden_layers,
        num_heads=text.num_attention_heads,
        context=context,
        tie_weights=bool(getattr(text, "tie_word_embeddings", False)),
        hf_config=hf_config.to_dict(),
    )


def load_folder(name: str, device) -> tuple[ModelConfig, Any, PretrainedLM, RunConfig, Path]:
    """(model config, tokenizer, model, run config, folder) of a Hugging Face folder or cached id."""
    from tokenizers import Tokenizer as HFTokenizer

    from gentext.data.tokenizers import BPETokenizer

    transformers = _transformers()
    folder = locate(name)
    if not list(folder.glob("*.safetensors")):
        raise GentextError(f"{folder}: no .safetensors weights (gentext never loads pickled .bin files)")
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    if (folder / "tokenizer.json").is_file():
        tokenizer = BPETokenizer(HFTokenizer.from_file(str(folder / "tokenizer.json")))
    else:  # vocab.json + merges.txt (older GPT-2 folders): the fast tokenizer builds the same thing
        tokenizer = BPETokenizer(transformers.AutoTokenizer.from_pretrained(folder).backend_tokenizer)
    config = model_config(hf.config)
    if tokenizer.vocab_size > config.vocab_size:
        raise GentextError(f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens, the model {config.vocab_size}")
    model = PretrainedLM(config)
    model.hf.load_state_dict(hf.state_dict())
    run_config = RunConfig(
        model=config,
        tokenizer=TokenizerConfig(level="bpe", vocab_size=tokenizer.vocab_size),
        sources=(f"pretrained:{name}",),
        pretrained=str(folder),
    )
    return config, tokenizer, model.to(device).eval(), run_config, folder
