"""Reading RTMDet-Ins configs without executing them (no mmdet import here).

``rtmdetl_e60.ckpt`` carries its training config as Python source in
``meta['cfg']``, written for an older mmdet (``file_client_args``,
``custom_imports`` of the ``animeinsseg`` package, head type
``RTMDetInsSepBNHeadCustom``). That source is **read, never executed**:
:func:`read_config_literals` accepts only plain assignments of literals and
``dict(...)`` calls, so a crafted checkpoint cannot run code.
:func:`inference_model_config` then keeps only ``model`` and makes it buildable
with mmdet 3.3; :mod:`inference.rtmdet` builds it.

This module imports only the standard library, so the config rules are
testable (and usable) where mmdet is not installed.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "GUARDED_HEAD_TYPE",
    "SEP_BN_HEAD_TYPES",
    "inference_model_config",
    "load_model_config",
    "read_config_literals",
]

#: The project's own flat config for RTMDet-Ins-L with one class.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[1] / "models" / "rtmdet_ins_l_anime.py"
#: Registry name of :class:`inference.rtmdet.GuardedRTMDetInsSepBNHead`.
GUARDED_HEAD_TYPE = "GuardedRTMDetInsSepBNHead"
#: Head types built as the guarded head (same parameters).
SEP_BN_HEAD_TYPES = frozenset({"RTMDetInsSepBNHeadCustom", "RTMDetInsSepBNHead", GUARDED_HEAD_TYPE})


class _UnsupportedExpression(ValueError):
    """A config value is not a plain literal."""


_BINARY_OPERATORS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
}


def _literal_value(node: ast.AST, names: Mapping[str, object]) -> object:
    """Evaluate a literal-only expression; anything else raises :class:`_UnsupportedExpression`."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal_value(item, names) for item in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else (set(items) if isinstance(node, ast.Set) else items)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise _UnsupportedExpression("dict unpacking (**)")
        return {_literal_value(k, names): _literal_value(v, names) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if node.args or any(kw.arg is None for kw in node.keywords):
            raise _UnsupportedExpression("dict() with positional or ** arguments")
        return {kw.arg: _literal_value(kw.value, names) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal_value(node.operand, names)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
        raise _UnsupportedExpression("sign of a non-number")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPERATORS:
        left, right = _literal_value(node.left, names), _literal_value(node.right, names)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
        joins = isinstance(node.op, ast.Add) and type(left) is type(right) and isinstance(left, (str, list, tuple))
        if numbers or joins:
            return _BINARY_OPERATORS[type(node.op)](left, right)
        raise _UnsupportedExpression("arithmetic on non-numbers")
    if isinstance(node, ast.Name):
        if node.id in names:
            return copy.deepcopy(names[node.id])
        raise _UnsupportedExpression(f"name {node.id!r} not assigned before")
    raise _UnsupportedExpression(type(node).__name__)


def read_config_literals(text: str) -> dict[str, object]:
    """Read an mmengine Python-format config **without executing it**.

    Only top-level ``name = value`` statements whose value is built from
    literals, ``dict(key=...)`` calls, earlier names, signs and ``+ - * / //``
    are read. Everything else (imports, function calls, other statements) is
    skipped, and a name whose value is skipped is absent from the result.

    Args:
        text: the config source, e.g. ``meta['cfg']`` of an mmengine checkpoint.

    Returns:
        ``{name: value}`` with dicts, lists, tuples, strings and numbers.

    Raises:
        ValueError: ``text`` is not valid Python.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        raise ValueError(f"expected a Python-format config, got a syntax error: {error}") from error
    names: dict[str, object] = {}
    for statement in tree.body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
            continue
        target = statement.targets[0]
        if not isinstance(target, ast.Name):
            continue
        try:
            names[target.id] = _literal_value(statement.value, names)
        except _UnsupportedExpression:
            names.pop(target.id, None)
    return names


def _rename_keys(value: object, old: str, new: str) -> object:
    """Copy of nested dicts/lists with every dict key ``old`` renamed to ``new``."""
    if isinstance(value, dict):
        return {(new if key == old else key): _rename_keys(item, old, new) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rename_keys(item, old, new) for item in value)
    return value


def _drop_keys(value: object, key_to_drop: str) -> object:
    """Copy of nested dicts/lists without any dict key ``key_to_drop``."""
    if isinstance(value, dict):
        return {key: _drop_keys(item, key_to_drop) for key, item in value.items() if key != key_to_drop}
    if isinstance(value, (list, tuple)):
        return type(value)(_drop_keys(item, key_to_drop) for item in value)
    return value


def _replace_sync_bn(value: object) -> object:
    """Copy of nested dicts/lists with every ``type='SyncBN'`` norm replaced by ``'BN'``."""
    if isinstance(value, dict):
        out = {key: _replace_sync_bn(item) for key, item in value.items()}
        if out.get("type") in ("SyncBN", "mmdet.SyncBN", "mmcv.SyncBN"):
            out["type"] = "BN"
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_replace_sync_bn(item) for item in value)
    return value


def inference_model_config(config: Mapping[str, object]) -> dict[str, object]:
    """The ``model`` part of a (training) config, made buildable for inference with mmdet 3.3.

    * ``file_client_args`` is renamed ``backend_args`` (3.0-era name);
    * ``custom_imports`` and everything but ``model`` are left out (dataloaders,
      optimiser, schedules, hooks, visualiser: nothing inference needs);
    * ``model.train_cfg`` (assigner settings) and every ``init_cfg`` (pretrained
      downloads) are dropped; ``model.data_preprocessor.batch_augments`` is None;
    * ``SyncBN`` becomes ``BN`` (same parameters; SyncBN needs a process group);
    * the head ``RTMDetInsSepBNHeadCustom`` (or mmdet's ``RTMDetInsSepBNHead``)
      becomes the guarded head of :mod:`inference.rtmdet`
      (``GuardedRTMDetInsSepBNHead``).

    Args:
        config: ``{name: value}`` as returned by :func:`read_config_literals`.

    Returns:
        A deep copy of the model dict, ready for :func:`inference.rtmdet.build_detector`.

    Raises:
        ValueError: there is no ``model`` dict with a ``bbox_head``, or the head
            is of another type than RTMDet-Ins with separate BN.
    """
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("bbox_head"), dict):
        raise ValueError(f"expected a config with a model dict holding bbox_head, got model={type(model).__name__}")
    model = copy.deepcopy(model)
    model = _rename_keys(model, "file_client_args", "backend_args")
    model = _drop_keys(model, "init_cfg")
    model = _replace_sync_bn(model)
    model.pop("train_cfg", None)
    if isinstance(model.get("data_preprocessor"), dict):
        model["data_preprocessor"]["batch_augments"] = None
    head = model["bbox_head"]
    head.pop("train_cfg", None)
    head_type = str(head.get("type", "")).split(".")[-1]
    if head_type not in SEP_BN_HEAD_TYPES:
        raise ValueError(f"expected an RTMDet-Ins head of type {sorted(SEP_BN_HEAD_TYPES)}, got {head.get('type')!r}")
    head["type"] = GUARDED_HEAD_TYPE
    return model


def load_model_config(path: str | Path = DEFAULT_CONFIG_PATH) -> dict[str, object]:
    """The inference model dict of a flat config file (read, not executed), e.g. the project's own."""
    text = Path(path).read_text(encoding="utf-8")
    return inference_model_config(read_config_literals(text))
