"""ADE20K (SceneParsing150): class metadata, the ``ADEChallengeData2016`` folders and the Hub's ``scene_parse_150``.

The 150 class names and the RGB palette follow the order used by mmsegmentation's
``ADE20KDataset`` (which is the order of the label ids in ``ADEChallengeData2016``
annotations *after* reduce-zero-label: annotation value ``k`` in ``1..150`` becomes
class id ``k - 1``; annotation value ``0`` ("other"/unlabeled) becomes the ignore
index 255). mmseg spells class 7 as ``"bed "`` with a trailing space; it is stripped
here.

* :func:`scene_parsing_folder` reads one split of an ``ADEChallengeData2016`` folder (``images/training`` +
  ``annotations/training``, ...) or of any folder with ``images/`` and ``annotations/`` (PNG masks named like the
  images) as a ``datasets.Dataset`` with columns ``image`` and ``annotation`` (``None`` where the mask is missing).
* :func:`load_parquet_export` loads a Hub dataset from its parquet export (revision ``refs/convert/parquet``): the
  Hub's ``scene_parse_150`` is a loading script, which ``datasets`` 4 and later no longer run.

``datasets`` and ``huggingface_hub`` are imported inside the functions: ``import agent_hf`` must stay light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_PALETTE",
    "ADE_SPLIT_FOLDERS",
    "IMAGE_SUFFIXES",
    "PARQUET_EXPORT_REVISION",
    "ParquetExport",
    "ParquetExportNotFoundError",
    "ade20k_id2label",
    "find_split_folders",
    "load_parquet_export",
    "scene_parsing_folder",
]

# Split names of the `scene_parse_150` schema -> folder names of ADEChallengeData2016.
ADE_SPLIT_FOLDERS = {"train": "training", "validation": "validation"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PARQUET_EXPORT_REVISION = "refs/convert/parquet"

ADE20K_CLASSES: tuple[str, ...] = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)

ADE20K_PALETTE: tuple[tuple[int, int, int], ...] = (
    (120, 120, 120),
    (180, 120, 120),
    (6, 230, 230),
    (80, 50, 50),
    (4, 200, 3),
    (120, 120, 80),
    (140, 140, 140),
    (204, 5, 255),
    (230, 230, 230),
    (4, 250, 7),
    (224, 5, 255),
    (235, 255, 7),
    (150, 5, 61),
    (120, 120, 70),
    (8, 255, 51),
    (255, 6, 82),
    (143, 255, 140),
    (204, 255, 4),
    (255, 51, 7),
    (204, 70, 3),
    (0, 102, 200),
    (61, 230, 250),
    (255, 6, 51),
    (11, 102, 255),
    (255, 7, 71),
    (255, 9, 224),
    (9, 7, 230),
    (220, 220, 220),
    (255, 9, 92),
    (112, 9, 255),
    (8, 255, 214),
    (7, 255, 224),
    (255, 184, 6),
    (10, 255, 71),
    (255, 41, 10),
    (7, 255, 255),
    (224, 255, 8),
    (102, 8, 255),
    (255, 61, 6),
    (255, 194, 7),
    (255, 122, 8),
    (0, 255, 20),
    (255, 8, 41),
    (255, 5, 153),
    (6, 51, 255),
    (235, 12, 255),
    (160, 150, 20),
    (0, 163, 255),
    (140, 140, 140),
    (250, 10, 15),
    (20, 255, 0),
    (31, 255, 0),
    (255, 31, 0),
    (255, 224, 0),
    (153, 255, 0),
    (0, 0, 255),
    (255, 71, 0),
    (0, 235, 255),
    (0, 173, 255),
    (31, 0, 255),
    (11, 200, 200),
    (255, 82, 0),
    (0, 255, 245),
    (0, 61, 255),
    (0, 255, 112),
    (0, 255, 133),
    (255, 0, 0),
    (255, 163, 0),
    (255, 102, 0),
    (194, 255, 0),
    (0, 143, 255),
    (51, 255, 0),
    (0, 82, 255),
    (0, 255, 41),
    (0, 255, 173),
    (10, 0, 255),
    (173, 255, 0),
    (0, 255, 153),
    (255, 92, 0),
    (255, 0, 255),
    (255, 0, 245),
    (255, 0, 102),
    (255, 173, 0),
    (255, 0, 20),
    (255, 184, 184),
    (0, 31, 255),
    (0, 255, 61),
    (0, 71, 255),
    (255, 0, 204),
    (0, 255, 194),
    (0, 255, 82),
    (0, 10, 255),
    (0, 112, 255),
    (51, 0, 255),
    (0, 194, 255),
    (0, 122, 255),
    (0, 255, 163),
    (255, 153, 0),
    (0, 255, 10),
    (255, 112, 0),
    (143, 255, 0),
    (82, 0, 255),
    (163, 255, 0),
    (255, 235, 0),
    (8, 184, 170),
    (133, 0, 255),
    (0, 255, 92),
    (184, 0, 255),
    (255, 0, 31),
    (0, 184, 255),
    (0, 214, 255),
    (255, 0, 112),
    (92, 255, 0),
    (0, 224, 255),
    (112, 224, 255),
    (70, 184, 160),
    (163, 0, 255),
    (153, 0, 255),
    (71, 255, 0),
    (255, 0, 163),
    (255, 204, 0),
    (255, 0, 143),
    (0, 255, 235),
    (133, 255, 0),
    (255, 0, 235),
    (245, 0, 255),
    (255, 0, 122),
    (255, 245, 0),
    (10, 190, 212),
    (214, 255, 0),
    (0, 204, 255),
    (20, 0, 255),
    (255, 255, 0),
    (0, 153, 255),
    (0, 41, 255),
    (0, 255, 204),
    (41, 0, 255),
    (41, 255, 0),
    (173, 0, 255),
    (0, 245, 255),
    (71, 0, 255),
    (122, 0, 255),
    (0, 255, 184),
    (0, 92, 255),
    (184, 255, 0),
    (0, 133, 255),
    (255, 214, 0),
    (25, 194, 194),
    (102, 255, 0),
    (92, 0, 255),
)


def ade20k_id2label() -> dict[int, str]:
    """Return ``{class_id: name}`` for the 150 ADE20K classes (ids ``0..149``)."""
    return dict(enumerate(ADE20K_CLASSES))


# ------------------------------------------------------------------------------------------- ADEChallengeData2016
def _image_files(folder: Path) -> list[Path]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    dangling = [p for p in images if p.is_symlink() and not p.exists()]
    if dangling:  # would otherwise be dropped without a word
        more = f" (and {len(dangling) - 1} more)" if len(dangling) > 1 else ""
        raise ValueError(f"{dangling[0]} is a symbolic link to a missing file{more}: fix or remove it")
    return [p for p in images if p.is_file()]


def find_split_folders(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(images, annotations)`` folders of ``split`` (``"train"`` or ``"validation"``) under ``root``.

    ``root`` is an ``ADEChallengeData2016`` folder (``images/training``, ``annotations/training``, ...) or a folder
    with ``images/`` and ``annotations/`` directly.

    Raises:
        FileNotFoundError: neither layout is there, or the annotations folder is missing.
        ValueError: the images folder holds no image file.
    """
    root = Path(root)
    ade = ADE_SPLIT_FOLDERS[split]
    nested, flat = root / "images" / ade, root / "images"
    if nested.is_dir():
        images_dir, masks_dir = nested, root / "annotations" / ade
    elif flat.is_dir() and _image_files(flat):
        images_dir, masks_dir = flat, root / "annotations"
    else:
        found = sorted(p.name for p in flat.iterdir() if p.is_dir()) if flat.is_dir() else []
        raise FileNotFoundError(
            f"{root}: expected {nested} and {root / 'annotations' / ade} (ADEChallengeData2016 layout) or "
            f"{flat} and {root / 'annotations'} (image files and PNG masks with the same names)"
            + (f"; {flat} holds only the folders {found}" if found else "")
        )
    if not _image_files(images_dir):
        raise ValueError(f"{images_dir} is empty: it holds no image file ({', '.join(IMAGE_SUFFIXES)})")
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"{images_dir} has no annotation folder: expected {masks_dir}")
    return images_dir, masks_dir


def scene_parsing_folder(root: str | Path, split: str) -> datasets.Dataset:
    """One split of a scene-parsing folder (see :func:`find_split_folders`) as a ``datasets.Dataset``.

    Columns ``image`` and ``annotation`` (``datasets.Image``, read from the files when accessed); the annotation of an
    image is ``annotations/<stem>.png``, ``None`` when that file is missing (the sample checks report it).
    """
    import datasets

    images_dir, masks_dir = find_split_folders(root, split)
    images = _image_files(images_dir)
    masks = [masks_dir / f"{image.stem}.png" for image in images]
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    return datasets.Dataset.from_dict(
        {"image": [str(p) for p in images], "annotation": [str(m) if m.is_file() else None for m in masks]},
        features=features,
    )


# ------------------------------------------------------------------------------------------------ parquet export
class ParquetExportNotFoundError(FileNotFoundError):
    """The Hub has no parquet export of a dataset (or not of the requested configuration)."""


@dataclass
class ParquetExport:
    """A dataset loaded from its parquet export.

    Attributes:
        splits: ``datasets.DatasetDict`` (or ``IterableDatasetDict`` when streaming).
        partial: splits of which the export holds only a part (the Hub converts at most a few GB per split).
    """

    splits: Any
    partial: list[str]


def load_parquet_export(
    repo_id: str,
    config: str,
    *,
    splits: Sequence[str] | None = None,
    revision: str = PARQUET_EXPORT_REVISION,
    streaming: bool = False,
    cache_dir: str | None = None,
    token: str | bool | None = None,
) -> ParquetExport:
    """Loads configuration ``config`` of the Hub dataset ``repo_id`` from its parquet export.

    The export (revision ``refs/convert/parquet``, written by the Hub) holds ``{config}/{split}/NNNN.parquet``, or
    ``{config}/partial-{split}/NNNN.parquet`` when only part of a large split was converted. ``splits`` limits the
    splits loaded (default: all of them).

    Raises:
        ParquetExportNotFoundError: the repository, the revision or the configuration is not there.
    """
    import datasets
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = HfApi().list_repo_files(repo_id, repo_type="dataset", revision=revision, token=token)
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ParquetExportNotFoundError(
            f"the Hub has no parquet export of the dataset {repo_id} (revision {revision}): {type(error).__name__}"
        ) from error
    folders: dict[str, set[str]] = {}
    for path in files:
        parts = path.split("/")
        if len(parts) == 3 and parts[2].endswith(".parquet"):
            folders.setdefault(parts[0], set()).add(parts[1])
    if config not in folders:
        raise ParquetExportNotFoundError(
            f"the parquet export of {repo_id} (revision {revision}) has no configuration {config!r}; it has "
            f"{sorted(folders) or 'none'}"
        )
    data_files, partial = {}, []
    for folder in sorted(folders[config]):
        split = folder.removeprefix("partial-")
        if splits is not None and split not in splits:
            continue
        if split != folder:
            partial.append(split)
        data_files[split] = f"{config}/{folder}/*.parquet"
    splits = datasets.load_dataset(
        repo_id, revision=revision, data_files=data_files, streaming=streaming, cache_dir=cache_dir, token=token
    )
    return ParquetExport(splits, partial)
