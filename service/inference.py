"""The Open Inference Protocol (KServe V2) over our models: which model a name serves, its
tensor metadata, and an infer request checked and answered as tensors.

A model takes one input, `input` (FP32, shape [-1, n_features]; FP64 is accepted too) and gives
`probabilities` (FP32, [-1, n_classes]) and `predictions` (the class labels: INT64 or BYTES) for
classification, or `predictions` alone (FP32, [-1] or [-1, n_targets]) for regression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from core.runtime import Predictor
from core.spec import field_path
from service.errors import ApiError

INPUT = "input"
ACCEPTED = ("FP32", "FP64")
_FLAT: TypeAdapter[list[float]] = TypeAdapter(
    list[float], config={"strict": True, "allow_inf_nan": False}
)
_NESTED: TypeAdapter[list[list[float]]] = TypeAdapter(
    list[list[float]], config={"strict": True, "allow_inf_nan": False}
)


class Invalid(ApiError):
    """An infer request the protocol refuses: 400 {"error": ...}."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


@dataclass(frozen=True)
class Served:
    """The model a V2 name serves: the name asked for, its version (registered names only), the
    trained model and its platform."""

    name: str
    version: int | None
    versions: list[int] | None
    model_id: str
    engine: str


def tensor(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def label_type(predictor: Predictor) -> str:
    """INT64 for whole-number class labels, BYTES for text ones."""
    if all(isinstance(c, int) and not isinstance(c, bool) for c in predictor.classes):
        return "INT64"
    return "BYTES"


def output_tensors(predictor: Predictor) -> list[dict[str, Any]]:
    """The outputs a model gives, as metadata tensors."""
    if predictor.task == "regression":
        shape = [-1] if predictor.n_targets == 1 else [-1, predictor.n_targets]
        return [tensor("predictions", "FP32", shape)]
    return [
        tensor("probabilities", "FP32", [-1, len(predictor.classes)]),
        tensor("predictions", label_type(predictor), [-1]),
    ]


def metadata(served: Served, predictor: Predictor) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "name": served.name,
        "platform": f"trainsvc_{served.engine}",
        "inputs": [tensor(INPUT, "FP32", [-1, predictor.n_features])],
        "outputs": output_tensors(predictor),
    }
    if served.versions is not None:
        answer["versions"] = [str(v) for v in served.versions]
    return answer


def _shape(value: Any) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise Invalid(f"input '{INPUT}': shape must be a list of non-negative whole numbers")
    return value


def _data(value: Any) -> list[float]:
    """The tensor's numbers (flat or nested, row-major), flat; 400 for anything but finite
    numbers."""
    nested = isinstance(value, list) and bool(value) and isinstance(value[0], list)
    adapter: TypeAdapter[Any] = _NESTED if nested else _FLAT
    try:
        numbers = adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = field_path(("data", *first["loc"]))
        raise Invalid(f"input '{INPUT}': {where}: {first['msg']}") from None
    if not nested:
        return numbers
    if len({len(row) for row in numbers}) > 1:
        raise Invalid(f"input '{INPUT}': the nested data's rows differ in length")
    return [x for row in numbers for x in row]


def parse_request(
    payload: Any, predictor: Predictor, max_rows: int
) -> tuple[list[list[float]], list[str], str | None]:
    """The rows of an infer request, the outputs asked for, and the request's id."""
    if not isinstance(payload, dict):
        raise Invalid("the body must be a JSON object with 'inputs'")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise Invalid("'id' must be a string")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise Invalid(f"'inputs' must be a list of tensors; this model takes one, '{INPUT}'")
    by_name = {i.get("name"): i for i in inputs}
    unknown = [str(n) for n in by_name if n != INPUT]
    if unknown:
        raise Invalid(f"unknown input {unknown[0]!r}; this model takes one input, '{INPUT}'")
    if INPUT not in by_name or len(inputs) != 1:
        raise Invalid(f"missing input '{INPUT}' (FP32, shape [-1, {predictor.n_features}])")
    given = by_name[INPUT]
    datatype = given.get("datatype")
    if datatype not in ACCEPTED:
        raise Invalid(
            f"input '{INPUT}': datatype {datatype!r} is not accepted; send FP32 (or FP64)"
        )
    shape = _shape(given.get("shape"))
    data = _data(given.get("data"))
    width = predictor.n_features
    if len(shape) != 2 or shape[1] != width:
        raise Invalid(f"input '{INPUT}': shape {shape} is not [rows, {width}]")
    if not 1 <= shape[0] <= max_rows:
        raise Invalid(f"input '{INPUT}': between 1 and {max_rows} rows per request")
    if len(data) != shape[0] * width:
        raise Invalid(
            f"input '{INPUT}': shape {shape} needs {shape[0] * width} numbers; data has {len(data)}"
        )
    rows = [data[i : i + width] for i in range(0, len(data), width)]  # as Predictor takes them
    return rows, _outputs(payload.get("outputs"), predictor), request_id


def _outputs(requested: Any, predictor: Predictor) -> list[str]:
    names = [t["name"] for t in output_tensors(predictor)]
    if requested is None:
        return names
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise Invalid("'outputs' must be a list of {\"name\": ...}")
    for output in requested:
        if output["name"] not in names:
            raise Invalid(f"unknown output {output['name']!r}; this model gives {', '.join(names)}")
    return [o["name"] for o in requested]


def outputs(predictor: Predictor, answer: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """The predicted answer as output tensors (data flattened, row-major), in the order asked."""
    types = {t["name"]: t["datatype"] for t in output_tensors(predictor)}
    tensors = []
    for name in names:
        values = answer[name]
        if name == "probabilities" or (predictor.task == "regression" and predictor.n_targets > 1):
            # Rows of numbers, as the runtime answers them: flattened row-major.
            shape, data = [len(values), len(values[0])], [x for row in values for x in row]
        else:
            shape, data = [len(values)], list(values)
        tensors.append({**tensor(name, types[name], shape), "data": data})
    return tensors
