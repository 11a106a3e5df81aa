"""Model cards and Hub publishing for the Agent Attention segmentation models.

Nothing here imports torch or transformers: rendering a card, checking a folder or pushing it is fast and works in a
minimal environment.

* `agent_hf.hub.cards`: the paper's card of each preset (:func:`render_model_card`) and the README's models table,
  generated from `agent_hf.model_zoo`; templates are package data (``card_templates/*.md.j2``).
  `agent_hf.hub.imagenet_cards`: the same for the ImageNet classifiers. `agent_hf.hub.generated_files`: writes or
  checks them all (:func:`write_model_cards`, ``python -m agent_hf.hub --write``).
* `agent_hf.hub.folder_cards`: the card a model folder gets, from its provenance (:func:`card_for_folder`): the
  paper's card only for converted official weights of a preset; a card of its own (architecture, parameter count,
  measured results) for anything else.
* `agent_hf.hub.folder_checks`: :func:`validate_model_folder` checks a folder (and `check_repo_id` a repository id)
  before anything is sent; parameter count and weights digest read from safetensors files.
* `agent_hf.hub.publishing`: :func:`push_folder_to_hub` publishes a folder in one commit, then its card in a second,
  last commit; :func:`push_card_to_hub` (re)publishes only the card.
"""

from ..model_zoo import PAPER_URL, UPSTREAM_REPO_URL, UPSTREAM_SEGMENTATION_URL
from .cards import (
    BIBTEX,
    COUNTED_FLOPS,
    DEFAULT_NAMESPACE,
    DEMO_SPACE_URL,
    PAPER_RESULTS,
    PaperResult,
    models_table,
    render_model_card,
)
from .folder_cards import FolderOrigin, card_for_folder, folder_origin, render_folder_model_card
from .folder_checks import count_parameters, validate_model_folder, weights_digest_of_folder
from .generated_files import write_model_cards, write_readme_models_table
from .publishing import (
    CardPushError,
    HubConnectionError,
    HubTokenMissingError,
    PushResult,
    check_publishable,
    push_card_to_hub,
    push_folder_to_hub,
)

__all__ = [
    "BIBTEX",
    "COUNTED_FLOPS",
    "DEFAULT_NAMESPACE",
    "DEMO_SPACE_URL",
    "PAPER_RESULTS",
    "PAPER_URL",
    "UPSTREAM_REPO_URL",
    "UPSTREAM_SEGMENTATION_URL",
    "CardPushError",
    "FolderOrigin",
    "HubConnectionError",
    "HubTokenMissingError",
    "PaperResult",
    "PushResult",
    "card_for_folder",
    "check_publishable",
    "count_parameters",
    "folder_origin",
    "models_table",
    "push_card_to_hub",
    "push_folder_to_hub",
    "render_folder_model_card",
    "render_model_card",
    "validate_model_folder",
    "weights_digest_of_folder",
    "write_model_cards",
    "write_readme_models_table",
]
