"""Strict YAML reading for the configuration: UTF-8 only, one document, no duplicate keys.

``read(path)`` returns the plain data (what ``yaml.safe_load`` gives) and a map from each
dotted key path (``users[1].name``) to its line, for messages that point into the file.
Every failure is a ``YAMLFileError`` whose text is one line, without the file name (the
caller prefixes it).
"""
from __future__ import annotations

import typing

import yaml


class YAMLFileError(ValueError):
    pass


_MERGE = "tag:yaml.org,2002:merge"


def _key_text(key: typing.Any) -> str:
    return key if isinstance(key, str) else repr(key)


def _child(path: str, key: typing.Any) -> str:
    return f"{path}.{_key_text(key)}" if path else _key_text(key)


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: str, lines: dict) -> None:
    """Record the line of every key path; refuse a key given twice in one mapping."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(loader, item, f"{path}[{i}]", lines)
    elif isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:  # "<<: *base": later keys override on purpose
                continue
            if isinstance(key_node, yaml.ScalarNode):
                key = loader.construct_object(key_node)
            else:  # a complex key: construction refuses it if unhashable
                key = (key_node.tag, key_node.start_mark.index)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: construction reports it
                continue
            if first is not None:
                raise YAMLFileError(f"{_child(path, key)}: duplicate key at line {line} "
                                    f"(first at line {first})")
            seen[key] = line
            _walk(loader, value_node, _child(path, key), lines)


def parse(data: bytes) -> tuple[typing.Any, dict[str, int]]:
    """Parse the bytes of a YAML file (see the module's docstring)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise YAMLFileError(f"invalid UTF-8 at line {line}, column {column} "
                            f"(byte 0x{data[e.start]:02x})") from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks every character at once
        node = loader.get_single_node()
        lines: dict[str, int] = {}
        if node is None:
            return None, lines
        _walk(loader, node, "", lines)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = ", ".join(p for p in (e.context, e.problem) if p) or "malformed"
        raise YAMLFileError(f"invalid YAML{where}: {problem}") from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (a control char)
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise YAMLFileError(f"invalid YAML at line {line}, column {column}: "
                            f"character #x{e.character:04x} is not allowed") from None
    except yaml.YAMLError as e:  # pragma: no cover - every YAMLError above has a mark
        raise YAMLFileError(f"invalid YAML: {' '.join(str(e).split())}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read(path: str) -> tuple[typing.Any, dict[str, int]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise YAMLFileError(f"cannot read: {e.strerror}") from None
    return parse(data)
