"""A local diffusers pipeline folder read and checked without loading any weights: its ``model_index.json``,
its pipeline class and its components' configs; every mistake a one-line ``UserError`` naming the file."""

from __future__ import annotations

import json
from pathlib import Path

from noisesearch.errors import UserError


def read_index(folder: Path) -> dict:
    """A pipeline folder's ``model_index.json`` as a dict with a string ``_class_name``, else ``UserError``."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise UserError(f"model folder {str(folder)!r} has no model_index.json")
    index = _read_json_object(index_file)
    if not isinstance(index.get("_class_name"), str):
        raise UserError(f"{str(index_file)!r} names no pipeline class (a string '_class_name')")
    return index


def _read_json_object(file: Path) -> dict:
    """The JSON object in ``file``, else ``UserError`` naming the file (unreadable, not JSON, not an object)."""
    try:
        data = json.loads(file.read_bytes())
    except OSError as e:
        raise UserError(f"cannot read {str(file)!r}: {e.strerror or type(e).__name__}") from None
    except (ValueError, RecursionError):  # JSONDecodeError, bytes that are not UTF-8, absurd nesting
        raise UserError(f"{str(file)!r} is not valid JSON") from None
    if not isinstance(data, dict):
        raise UserError(f"{str(file)!r} must hold a JSON object, not a {type(data).__name__}")
    return data


def check_folder(folder: Path, classes: tuple[str, ...]) -> None:
    """Refuse a local pipeline folder without a readable ``model_index.json``, of another class, missing a component
    or with a component config (``config.json``, ``scheduler_config.json``, ...) that is not a JSON object."""
    if not folder.is_dir():
        raise UserError(f"model folder {str(folder)!r} is not a folder")
    index = read_index(folder)
    found = index["_class_name"]
    if found not in classes:
        raise UserError(f"model folder {str(folder)!r} holds a {found}, expected {' or '.join(classes)}")
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or not spec or spec[0] is None:
            continue
        if not (folder / name).is_dir():
            raise UserError(f"model folder {str(folder)!r} is incomplete: no {name}/ component")
        for config in sorted((folder / name).glob("*config.json")):
            _read_json_object(config)


def pipeline_class(path):
    """The diffusers pipeline class of a local folder (``model_index.json``'s ``_class_name``), read without loading
    any weights; the folder is checked as ``load_pipeline`` checks it (``check_folder``). None for anything
    that is not a local folder with a ``model_index.json`` (a hub id: its class is known once it is loaded)."""
    import diffusers

    local = Path(str(path)).expanduser()
    if not (local / "model_index.json").is_file():
        return None
    name = read_index(local)["_class_name"]
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise UserError(f"model folder {str(local)!r} names {name!r}, which is not a diffusers pipeline class")
    check_folder(local, (cls.__name__,))
    return cls
