"""The one reader of YAML configs (``sweep``, ``paper``, the studies): size, encoding, depth and alias checks
before the document is built, so a hostile file is refused in one line and never expanded in memory."""

from __future__ import annotations

from pathlib import Path

from noisesearch.errors import UserError

MAX_YAML_NODES = 100_000  # YAML nodes after expanding aliases; a real sweep config has a few hundred
CONFIG_MAX_BYTES = 2**20  # a real sweep config is a few hundred bytes; a prompt list belongs in a prompt file
PROMPT_FILE_MAX_BYTES = 64 * 2**20
CONFIG_HINT = "give a YAML config file"


class _TooDeep(Exception):
    """A YAML document nested deeper than ``_io.MAX_DEPTH`` (with its aliases expanded when ``aliases``)."""

    def __init__(self, aliases: bool):
        self.aliases = aliases


def _read_yaml(path: Path | str):
    """Parse a YAML config with the safe loader, after every check that needs no parsing at length.

    The one reader of YAML configs (``sweep``, ``paper``, the studies): the file must be a regular
    file (never opened if a FIFO or a device) of at most ``CONFIG_MAX_BYTES``, UTF-8 without NUL
    bytes, nested at most ``_io.MAX_DEPTH`` levels (scanned event by event, without recursion, before
    the document is built; again with anchors and aliases expanded), with at most ``MAX_YAML_NODES``
    nodes once its aliases are expanded.
    """
    import yaml

    from noisesearch._io import MAX_DEPTH
    from noisesearch.checks import read_input_text

    text = read_input_text(path, what="config", max_bytes=CONFIG_MAX_BYTES, hint=CONFIG_HINT)
    loader = yaml.SafeLoader(text)
    try:
        _check_depth(text)
        node = loader.get_single_node()
        if node is None:
            return None
        size, _ = _expanded(node, {}, set(), 0)
        if size > MAX_YAML_NODES:
            raise UserError(
                f"{path}: anchors and aliases expand to {size:,} YAML nodes, more than the {MAX_YAML_NODES:,} a "
                "config may have; write the values out"
            )
        return loader.construct_document(node)
    except (_TooDeep, RecursionError) as e:
        aliases = " once its aliases are expanded" if getattr(e, "aliases", False) else ""
        raise UserError(
            f"{path}: the config is nested deeper than {MAX_DEPTH} levels{aliases}; a sweep config needs a few"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}:{where} not valid YAML ({problem})") from None
    finally:
        loader.dispose()


def _check_depth(text: str) -> None:
    """Raise ``_TooDeep`` if the YAML text nests deeper than ``MAX_DEPTH`` (the event parser does not recurse)."""
    import yaml

    from noisesearch._io import MAX_DEPTH

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooDeep(aliases=False)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _expanded(node, memo: dict, open_: set, outer: int) -> tuple[int, int]:
    """(nodes, nesting height) of ``node`` with every alias expanded; counted, never built, memoised per node.

    ``outer``: the collections around ``node``. Raises ``_TooDeep`` past ``MAX_DEPTH`` levels, so the
    recursion here stays as shallow as that.
    """
    import yaml

    from noisesearch._io import MAX_DEPTH

    key = id(node)
    if key in memo:
        size, height = memo[key]
    elif not isinstance(node, yaml.CollectionNode):
        return 1, 0
    else:
        if key in open_:
            raise UserError("the config has an alias inside its own anchor (a recursive structure)")
        if outer + 1 > MAX_DEPTH:
            raise _TooDeep(aliases=True)
        open_.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
        size, height = 1, 1
        for child in children:
            child_size, child_height = _expanded(child, memo, open_, outer + 1)
            size, height = size + child_size, max(height, child_height + 1)
        open_.discard(key)
        size = min(size, MAX_YAML_NODES + 1)  # cap: the answer is only compared with the limit
        memo[key] = size, height
    if outer + height > MAX_DEPTH:
        raise _TooDeep(aliases=True)
    return size, height
