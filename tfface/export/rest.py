"""TF Serving's REST predict API, offline: request bodies -> signature tensors -> response bodies.

TF Serving's ``POST /v1/models/<name>[/versions/<n>]:predict`` takes

* row format ``{"signature_name": ..., "instances": [...]}``: one entry per batch element, the
  value itself when the signature has one input, else ``{input_name: value}``; answered with
  ``{"predictions": [...]}`` (one value per element, or ``{output_name: value}`` with several outputs);
* columnar format ``{"inputs": value | {input_name: value}}``: whole tensors; answered with
  ``{"outputs": value | {output_name: value}}``.

Strings (``encoded``, ``image_bytes``) are sent as ``{"b64": "<base64>"}``. :func:`predict` runs a
body against a SavedModel in this process, so a ``curl`` request can be tried without a server.
"""
from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import tensorflow as tf

from tfface.core.errors import UserError


def _decode_strings(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise UserError(f"request: a JSON object inside a tensor must be {{\"b64\": ...}}, got keys {sorted(value)}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError):
            raise UserError("request: a \"b64\" value is not valid base64") from None
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    return value


def _tensor(value: Any, spec: tf.TensorSpec, name: str) -> np.ndarray:
    """``value`` as an array of ``spec``'s dtype and shape; :class:`UserError` naming ``name`` if not."""
    expected = f"{spec.dtype.name} {spec.shape.as_list()}".replace("None", "B")
    value = _decode_strings(value)
    if spec.dtype.is_integer:
        info = np.iinfo(spec.dtype.as_numpy_dtype)
        raw = np.array(value, dtype=object)
        numbers = [v for v in raw.ravel() if isinstance(v, (int, np.integer))]
        if any(v < info.min or v > info.max for v in numbers):
            raise UserError(f"input '{name}': expected {expected} values in [{info.min}, {info.max}]")
    try:
        array = np.array(value, dtype=object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype)
    except (ValueError, TypeError, OverflowError):
        raise UserError(f"input '{name}': expected {expected}, got values that are not {spec.dtype.name}") from None
    if not spec.shape.is_compatible_with(array.shape):
        raise UserError(f"input '{name}': expected {expected}, got shape {list(array.shape)}")
    if array.size == 0:
        raise UserError(f"input '{name}': empty batch")
    return array


def input_specs(model: Any, signature_name: str) -> tuple[Any, dict[str, tf.TensorSpec]]:
    """(concrete function, {input name: TensorSpec}) of a loaded SavedModel's signature."""
    if signature_name not in model.signatures:
        raise UserError(f"signature_name: expected one of {sorted(model.signatures)}, got {signature_name!r}")
    function = model.signatures[signature_name]
    return function, dict(function.structured_input_signature[1])


def request_tensors(body: dict | str, specs: dict[str, tf.TensorSpec]) -> tuple[dict[str, np.ndarray], bool]:
    """A REST predict body -> ({input name: array}, row format?) checked against ``specs``."""
    body = json.loads(body) if isinstance(body, str) else body
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise UserError('request: expected a JSON object with exactly one of "instances" or "inputs"')
    names = sorted(specs)
    if "inputs" in body:
        data = body["inputs"]
        named = isinstance(data, dict) and set(data) == set(names)
        columns = data if named else {names[0]: data} if len(names) == 1 else None
        if columns is None:
            raise UserError(f'request: "inputs" must name the inputs {names}')
        return {name: _tensor(columns[name], specs[name], name) for name in names}, False
    rows = body["instances"]
    if not isinstance(rows, list) or not rows:
        raise UserError('request: "instances" must be a non-empty list (one entry per batch element)')
    if len(names) == 1 and not (isinstance(rows[0], dict) and set(rows[0]) == {names[0]}):
        rows = [{names[0]: row} for row in rows]
    if any(not isinstance(row, dict) or set(row) != set(names) for row in rows):
        raise UserError(f'request: every instance must be an object with the inputs {names}')
    return {name: _tensor([row[name] for row in rows], specs[name], name) for name in names}, True


def response_body(outputs: dict[str, Any], row_format: bool) -> dict:
    """Signature outputs -> TF Serving's response (``predictions`` or ``outputs``)."""
    arrays = {name: np.asarray(value).tolist() for name, value in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(arrays.values())) if len(arrays) == 1 else arrays}
    if len(arrays) == 1:
        return {"predictions": next(iter(arrays.values()))}
    count = len(next(iter(arrays.values())))
    return {"predictions": [{name: values[i] for name, values in arrays.items()} for i in range(count)]}


def predict(model: Any, body: dict | str) -> dict:
    """Runs a REST predict ``body`` against a loaded SavedModel (``tf.saved_model.load``), as
    TF Serving would answer it."""
    parsed = json.loads(body) if isinstance(body, str) else body
    function, specs = input_specs(model, parsed.get("signature_name", "serving_default") if isinstance(parsed, dict) else "")
    tensors, row_format = request_tensors(parsed, specs)
    outputs = function(**{name: tf.constant(value, specs[name].dtype) for name, value in tensors.items()})
    return response_body({name: value.numpy() for name, value in outputs.items()}, row_format)


def b64(data: bytes) -> dict:
    """``{"b64": ...}`` of ``data``, for string inputs of a request body."""
    return {"b64": base64.b64encode(data).decode("ascii")}
