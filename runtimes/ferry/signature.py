"""What a model takes and returns: tensor names, datatypes and shapes, with -1 for a dynamic dimension.

The batch dimension is the first; the batcher concatenates requests along it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ferry.codec import DATATYPES, datatype_of
from ferry.errors import InvalidInput


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 marks a dynamic dimension; shape[0] is the batch dimension

    @property
    def dtype(self) -> np.dtype:
        return DATATYPES[self.datatype]

    def as_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, spec: dict) -> TensorSpec:
        return cls(spec["name"], spec["datatype"], tuple(int(d) for d in spec["shape"]))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    _input_index: dict = field(default_factory=dict, compare=False, repr=False)
    # (name, dtype, ndim, row shape) per input when every input has fixed, numeric rows: the per-request check
    # is then a few comparisons; anything that fails them takes the full check, which words the error.
    _fixed_rows: list = field(default_factory=list, compare=False, repr=False)
    # The same for a model of one input (most models), checked without the loop: a few hundred ns per request
    # that 64 one-row requests pay 64 times per batch.
    _single: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self):
        self._input_index.update({spec.name: spec for spec in self.inputs})
        if all(-1 not in spec.shape[1:] and spec.datatype != "BYTES" for spec in self.inputs):
            self._fixed_rows.extend(
                (spec.name, spec.dtype, len(spec.shape), spec.shape[1:]) for spec in self.inputs
            )
            if len(self._fixed_rows) == 1:
                self._single.extend(self._fixed_rows[0])

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    @property
    def fixed_batch_key(self) -> tuple | None:
        """The batcher's key (name, row shape, dtype per input) shared by every request that passes
        ``check_inputs``, when all inputs have fixed, numeric rows; None otherwise."""
        if not self._fixed_rows:
            return None
        return tuple((name, row_shape, dtype) for name, dtype, _, row_shape in self._fixed_rows)

    def input(self, name: str) -> TensorSpec:
        return self._input_index[name]

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> int:
        """Validate a request's tensors against the model; returns the number of rows (batch size)."""
        if self._single and len(inputs) == 1:
            name, dtype, ndim, row_shape = self._single
            array = inputs.get(name)
            # (``is``: numpy's dtypes of one kind are one object; any other spelling takes the full check below.)
            if array is not None and array.dtype is dtype:
                shape = array.shape
                if len(shape) == ndim and shape[1:] == row_shape and shape[0]:
                    return shape[0]
        elif self._fixed_rows and len(inputs) == len(self._fixed_rows):
            rows = -1
            for name, dtype, ndim, row_shape in self._fixed_rows:
                array = inputs.get(name)
                if (
                    array is None
                    or array.ndim != ndim
                    or array.dtype != dtype
                    or array.shape[1:] != row_shape
                ):
                    break
                if rows == -1:
                    rows = array.shape[0]
                elif array.shape[0] != rows:
                    break
            else:
                if rows > 0:
                    return rows
        missing = [name for name in self._input_index if name not in inputs]
        if missing:
            raise InvalidInput(
                f"missing input {missing[0]!r}: the model expects {self.input_names}, got {list(inputs)}"
            )
        if len(inputs) != len(self.inputs):
            unknown = [name for name in inputs if name not in self._input_index]
            raise InvalidInput(f"unknown input {unknown[0]!r}: the model expects {self.input_names}")
        rows = -1
        for spec in self.inputs:
            array = inputs[spec.name]
            got = datatype_of(array)
            if got != spec.datatype:
                raise InvalidInput(f"input {spec.name!r}: expected datatype {spec.datatype}, got {got}")
            if array.ndim != len(spec.shape) or any(
                want not in (-1, have) for want, have in zip(spec.shape[1:], array.shape[1:], strict=True)
            ):
                raise InvalidInput(
                    f"input {spec.name!r}: expected shape {list(spec.shape)}, got {list(array.shape)}"
                )
            if rows == -1:
                rows = array.shape[0]
            elif array.shape[0] != rows:
                raise InvalidInput(
                    f"input {spec.name!r}: has {array.shape[0]} rows but other inputs have {rows}"
                )
        if rows == 0:
            raise InvalidInput(f"input {self.inputs[0].name!r}: a request needs at least one row")
        return rows

    def check_outputs(self, requested: list[str] | None) -> list[str] | None:
        if requested is None:
            return None
        for name in requested:
            if name not in self.output_names:
                raise InvalidInput(f"unknown output {name!r}: the model returns {self.output_names}")
        return requested

    def as_dict(self) -> dict:
        return {
            "inputs": [spec.as_dict() for spec in self.inputs],
            "outputs": [spec.as_dict() for spec in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(s) for s in data["inputs"]),
            tuple(TensorSpec.from_dict(s) for s in data["outputs"]),
        )
