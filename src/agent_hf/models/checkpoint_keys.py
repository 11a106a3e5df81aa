"""The checkpoint key renaming of both model families: the `key_mapping` with which each class loads the parameter
names of agent-hf 0.1.0, of the official code and of the family's other classes (`checkpoint_key_mapping`), and
the renaming of one key by it (`rename_key`, as transformers 4.x applies it).

Shipped to the Hub with the model: imports only the standard library.
"""

from __future__ import annotations

import re


def checkpoint_key_mapping(legacy_names: dict[str, str], base_prefix: str, base_keys: str, target: str) -> dict:
    """The `key_mapping` (regex -> replacement) with which a class of a model family loads a checkpoint.

    Args:
        legacy_names (`dict[str, str]`): renamings of the base model's own keys (regex matched at the start of a
            base-model key, e.g. `block1\\.` -> `stages.0.blocks.`): parameter names of agent-hf 0.1.0 and of the
            official code.
        base_prefix (`str`): attribute of the base model in the backbone class (`agent_swin`, `agent_pvt`).
        base_keys (`str`): regex matching the first name of a base-model key (e.g. `(?:patch_embed|layers)\\.`).
        target (`str`): the class that loads: `"model"`, `"backbone"`, `"segmentation"` or `"classification"`.

    A key may come from a base-model folder (no prefix), a backbone folder (`agent_swin.`) or a segmentation folder
    (`backbone.agent_swin.`). Each rule names the prefixes it starts with and rewrites them to where the loading
    class keeps the base model (one rule for the prefixes that go to the same place), leaving transformers' own
    `base_model_prefix` handling (add or strip `agent_swin.`) to the backbone and base-model classes. transformers
    4.x applies the first matching rule and 5.x every rule in turn: a 0.1.0 name is renamed by one rule that also
    moves its prefix, after which no other rule matches.
    """
    bare, nested, segmentation = "", f"{base_prefix}.", f"backbone.{base_prefix}."
    destination = {
        "model": {segmentation: bare, nested: nested, bare: bare},
        "backbone": {segmentation: bare, nested: nested, bare: bare},
        "segmentation": {segmentation: segmentation, nested: segmentation, bare: segmentation},
        # The image classifier keeps the base model at `agent_swin.` beside its own top-level `norm`/`classifier`.
        "classification": {segmentation: nested, nested: nested, bare: bare},
    }[target]
    # One rule per legacy name and destination, its origins in one group: transformers 5.x tries every rule on every
    # key, so fewer rules load faster (74 -> 26 for the Agent-PVT segmentation model).
    origins_of: dict[str, list[str]] = {}
    for origin, prefix in destination.items():
        origins_of.setdefault(prefix, []).append(origin)
    rules = {}
    for prefix, origins in origins_of.items():
        named = [re.escape(origin) for origin in origins if origin]
        if not named:
            start = "^"
        elif len(named) == 1 and "" not in origins:
            start = "^" + named[0]
        else:  # the origins in one group, optional where the key may also be bare
            start = f"^(?:{'|'.join(named)})" + ("?" if "" in origins else "")
        for name, replacement in legacy_names.items():
            rules[start + name] = prefix + replacement
    for origin, prefix in destination.items():
        if origin != prefix:
            rules["^" + (re.escape(origin) if origin else f"(?={base_keys})")] = prefix
    return rules


def rename_key(key: str, mapping: dict[str, str]) -> str:
    """`key` renamed by the first rule of `mapping` (regex -> replacement) that matches it, as transformers 4.x
    applies `key_mapping`; unchanged when none does."""
    for pattern, replacement in mapping.items():
        key, count = re.subn(pattern, replacement, key)
        if count:
            break
    return key


__all__ = ["checkpoint_key_mapping", "rename_key"]
