"""The README and docs/ (issue 21): a README read in five minutes that opens with the two commands, docs pages that
link to what exists, every page reachable from the README, and what they show true to the code: the README's
inference snippet runs, every script command they show uses options the script has, the serving-limits table gives
the code's defaults."""

import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, tiny_swin_config
from PIL import Image

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

FENCED_CODE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without code, where a `[x](y)` is no link."""
    return INLINE_CODE.sub("", FENCED_CODE.sub("", text))


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens, a repeated
    anchor numbered."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCED_CODE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        anchor, count = slug, 0
        while anchor in anchors:
            count += 1
            anchor = f"{slug}-{count}"
        anchors.add(anchor)
    return anchors


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z]+:", target)]


def test_heading_anchors_are_githubs():
    text = "# A page\n## The demo: `make demo`\n## Publishing: `push_to_hub`\n## Notes\n## Notes\n```\n# not one\n```"
    assert heading_anchors(text) == {"a-page", "the-demo-make-demo", "publishing-push_to_hub", "notes", "notes-1"}


def test_the_readme_is_short_and_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details to docs/"
    body = [line for line in lines if line.strip() and not line.startswith("# ")]
    assert body[0] == "```bash" and body[1].startswith("make demo ") and body[2].startswith("make test "), body[:3]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_points_to_a_file_and_heading_that_exist(page):
    links = relative_links(page)
    assert links, f"{page.name} links to no other page"
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and anchor not in heading_anchors(target.read_text()):
            broken.append(f"{link}: {target.name} has no heading #{anchor}")
    assert not broken, f"{page.name}: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / link.partition("#")[0]).resolve() for link in relative_links(README)}
    assert [page.name for page in DOCS if page.resolve() not in linked] == []


def test_the_readme_inference_snippet_runs_as_written(tmp_path, monkeypatch):
    """The README's Python snippet, on the folder it names (a tiny model saved where `make demo` saves its own) and a
    photo named as it names it."""
    import torch

    from agent_hf import AgentImageProcessor, AgentSwinForSemanticSegmentation
    from agent_hf.saving import save_model_folder

    snippet = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    folder = re.search(r'folder = "([^"]+)"', snippet).group(1)
    photo = re.search(r'Image.open\("([^"]+)"\)', snippet).group(1)
    torch.manual_seed(0)
    model = AgentSwinForSemanticSegmentation(tiny_swin_config()).eval()
    save_model_folder(model, tmp_path / folder, AgentImageProcessor(scale=(128, 64)))
    height, width = 60, 90
    gradient = np.linspace(0, 255, height * width * 3).reshape(height, width, 3)
    Image.fromarray(gradient.astype(np.uint8)).save(tmp_path / photo)
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 (the project's own README)
    assert namespace["segments"] and {segment["label"] for segment in namespace["segments"]} <= set(
        model.config.id2label.values()
    )
    assert all(segment["mask"].size == (width, height) for segment in namespace["segments"])
    class_map = namespace["class_map"]
    assert class_map.shape == (height, width) and set(class_map.unique().tolist()) <= set(range(5))


def script_options(script: Path) -> set[str]:
    """The options a script accepts: its argparse options, its argument dataclasses' fields, the options of its
    generated --help text, and TrainingArguments' where it parses those."""
    from transformers import TrainingArguments

    source = script.read_text()
    options = set(re.findall(r"[\"']--(\w+)[\"']", source)) | set(re.findall(r"^    (\w+): .*= field\(", source, re.M))
    help_text = script.with_name(f"{script.stem}_help.txt")
    if help_text.exists():
        options |= set(re.findall(r"--(\w+)", help_text.read_text()))
    if "TrainingArguments" in source:
        options |= {field.name for field in fields(TrainingArguments)}
    return options


def script_commands(page: Path) -> list[tuple[str, list[str]]]:
    """``(script, options)`` of every `scripts/*.py` command in a page's code blocks and one-line code spans."""
    text = page.read_text()
    blocks = [block.replace("\\\n", " ") for block in FENCED_CODE.findall(text)] + INLINE_CODE.findall(text)
    commands = []
    for line in "\n".join(blocks).splitlines():
        for script, arguments in re.findall(r"(scripts/\w+\.py)((?: +[^#`;|&]\S*)*)", line):
            commands.append((script, re.findall(r"(?<![\w-])--(\w+)", arguments)))
    return commands


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_script_command_shown_uses_options_the_script_has(page):
    unknown = [
        (script, option)
        for script, options in script_commands(page)
        for option in options
        if option not in script_options(REPO_ROOT / script)
    ]
    assert not unknown, f"{page.name} shows options its scripts do not have: {unknown}"


def test_script_commands_are_found_with_their_options():
    commands = script_commands(REPO_ROOT / "docs" / "training.md")
    assert ("scripts/prepare_ade20k.py", ["ade_dir", "push_to_hub", "hub_dataset_id"]) in commands
    paper_runs = [options for script, options in commands if "eval_steps" in options]
    assert len(paper_runs) == 2 and "backbone_checkpoint" in paper_runs[0]
    assert "not_an_option" not in script_options(REPO_ROOT / "scripts/run_semantic_segmentation.py")


def test_the_serving_limits_table_gives_the_defaults_of_the_code():
    from agent_hf.models.segmentation_inference import ServingLimits

    page = (REPO_ROOT / "docs" / "inference-and-serving.md").read_text()
    table = page[page.index("| Limit (`ServingLimits`)") :].split("\n\n", 1)[0].splitlines()[2:]
    units = {"MiB": 2**20, "s": 1}
    documented = {}
    for row in table:
        names, defaults = row.strip("|").split("|")[:2]
        for name, default in zip(re.findall(r"`(\w+)`", names), defaults.split(","), strict=True):
            number, unit = re.fullmatch(r"([\d. ]+?) *(MiB|s)?", default.strip()).groups()
            documented[name] = float(number.replace(" ", "")) * units.get(unit, 1)
    defaults = ServingLimits()
    assert documented == {field.name: float(getattr(defaults, field.name)) for field in fields(ServingLimits)}
