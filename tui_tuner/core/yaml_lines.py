"""Read YAML and remember the line of every key, so a configuration error can point at it.

PyYAML's constructed data (dicts and lists) forgets where things were written. This module
parses with the safe loader, builds the data as usual, and walks the node tree once more to
record, for each dotted key path (``server.flags.max_model_len``, ``workload.options[2]``), the
1-based line it was written on. Only safe YAML is read: no Python objects, ever.
"""

from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["YamlSyntaxError", "child_path", "load_with_lines"]


class YamlSyntaxError(Exception):
    """The text is not valid YAML; ``line`` is 1-based, or None when YAML did not say."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def child_path(parent: str, key: object) -> str:
    """The dotted path of ``key`` inside ``parent`` (the top level is the empty path)."""
    return f"{parent}.{key}" if parent else str(key)


def load_with_lines(text: str) -> tuple[object, dict[str, int]]:
    """Parse one YAML document; return its data and the line of each key and list item.

    Raises YamlSyntaxError for anything PyYAML rejects, including values its constructors
    refuse (``2001-02-30``, integers too long to convert) and nesting too deep to parse.
    """
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters at once
        try:
            node = loader.get_single_node()
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        message = ": ".join(p for p in (err.context, err.problem) if p) or "invalid YAML"
        raise YamlSyntaxError(line, f"invalid YAML: {message}") from None
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        char = chr(err.character) if isinstance(err.character, int) else err.character
        raise YamlSyntaxError(line, f"invalid YAML: {err.reason} ({char!r})") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as err:
        raise YamlSyntaxError(None, f"invalid YAML: {err}") from None
    return data, _key_lines(node)


def _key_lines(root: Node | None) -> dict[str, int]:
    """Walk the node tree without recursion (aliases may make it cyclic, nesting may be deep)."""
    lines: dict[str, int] = {}
    seen: set[int] = set()
    stack: list[tuple[Node, str]] = [] if root is None else [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, ScalarNode) else "?"
                child = child_path(path, key)
                lines.setdefault(child, key_node.start_mark.line + 1)
                stack.append((value_node, child))
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                child = f"{path}[{index}]"
                lines.setdefault(child, item.start_mark.line + 1)
                stack.append((item, child))
    return lines
