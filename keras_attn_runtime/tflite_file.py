"""Reads a .tflite file's structure without TensorFlow or LiteRT.

A .tflite file is a FlatBuffer (schema: TFLite's `schema.fbs`, file
identifier `TFL3`). `TFLiteFile` walks the few tables the runtime needs,
with the standard library only: the operator codes, the signatures (names
and shapes of their inputs and outputs), the `Model.metadata` entries,
and the keras_attn description embedded by `keras_attn.export.metadata`
(the entry named `"keras_attn"`, UTF-8 JSON).

Every read is bounds-checked: a truncated or corrupt file raises one
`ValueError` naming the file, never a `struct.error` or an `IndexError`.
"""

import contextlib
import functools
import json
import mmap
import os
import struct

from keras_attn_runtime import description as description_lib

METADATA_NAME = description_lib.METADATA_NAME
FILE_IDENTIFIER = b"TFL3"

# Vtable slots (2 bytes each after the 4-byte header) of the schema
# fields read here: field id n lives at byte 4 + 2 * n.
_MODEL = dict(operator_codes=1, subgraphs=2, buffers=4, metadata=6,
              signature_defs=7)
_OPERATOR_CODE = dict(deprecated_builtin_code=0, custom_code=1,
                      builtin_code=3)
_METADATA = dict(name=0, buffer=1)
_BUFFER = dict(data=0, offset=1, size=2)
_SIGNATURE_DEF = dict(inputs=0, outputs=1, signature_key=2, subgraph_index=4)
_TENSOR_MAP = dict(name=0, tensor_index=1)
_SUBGRAPH = dict(tensors=0, operators=3)
_TENSOR = dict(shape=0, type=1, buffer=2, name=3)
_OPERATOR = dict(opcode_index=0, inputs=1, outputs=2)

# BuiltinOperator codes used here.
CUSTOM = 32
GATHER = 36
# Ops that pass token ids through unchanged in value (the embedding
# wraps negative ids with SELECT(ids < 0, ids + V, ids)).
_ID_PRESERVING = {22: "RESHAPE", 43: "SQUEEZE", 53: "CAST", 64: "SELECT",
                  70: "EXPAND_DIMS", 123: "SELECT_V2"}
# TensorType codes of the tensors signatures use.
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8",
                4: "int64", 5: "string", 6: "bool", 7: "int16", 9: "int8",
                10: "float64"}


class _Corrupt(Exception):
    pass


class _Reader:
    """Bounds-checked little-endian FlatBuffer access to `data`."""

    def __init__(self, data):
        self.data = data

    def _unpack(self, fmt, position):
        size = struct.calcsize(fmt)
        if position < 0 or position + size > len(self.data):
            raise _Corrupt(
                f"a read of {size} bytes at offset {position} runs past the "
                f"end of the file ({len(self.data)} bytes)"
            )
        return struct.unpack_from("<" + fmt, self.data, position)[0]

    def table(self, position):
        vtable = position - self._unpack("i", position)
        vtable_size = self._unpack("H", vtable)
        if vtable_size < 4 or vtable_size % 2:
            raise _Corrupt(f"a table at offset {position} has a bad vtable")
        return _Table(self, position, vtable, vtable_size)

    def indirect(self, position):
        return position + self._unpack("I", position)

    def vector(self, position, element_size=1):
        """(first element position, length) of the vector at `position`."""
        length = self._unpack("I", position)
        if position + 4 + length * element_size > len(self.data):
            raise _Corrupt(
                f"a vector of {length} elements at offset {position} runs "
                "past the end of the file"
            )
        return position + 4, length

    def string(self, position):
        start, length = self.vector(position)
        return bytes(self.data[start:start + length])


class _Table:
    def __init__(self, reader, position, vtable, vtable_size):
        self.reader = reader
        self.position = position
        self.vtable = vtable
        self.vtable_size = vtable_size

    def _field(self, slot):
        entry = 4 + 2 * slot
        if entry >= self.vtable_size:
            return 0
        return self.reader._unpack("H", self.vtable + entry)

    def scalar(self, slot, fmt, default=0):
        offset = self._field(slot)
        if not offset:
            return default
        return self.reader._unpack(fmt, self.position + offset)

    def has(self, slot):
        return bool(self._field(slot))

    def _target(self, slot):
        offset = self._field(slot)
        if not offset:
            return None
        return self.reader.indirect(self.position + offset)

    def string(self, slot):
        target = self._target(slot)
        return None if target is None else self.reader.string(target)

    def table(self, slot):
        target = self._target(slot)
        return None if target is None else self.reader.table(target)

    def tables(self, slot):
        target = self._target(slot)
        if target is None:
            return []
        start, length = self.reader.vector(target, 4)
        return [self.reader.table(self.reader.indirect(start + 4 * i))
                for i in range(length)]

    def table_at(self, slot, index):
        """The `index`-th table of the vector field `slot`, or `None`."""
        target = self._target(slot)
        if target is None:
            return None
        start, length = self.reader.vector(target, 4)
        if not 0 <= index < length:
            return None
        return self.reader.table(self.reader.indirect(start + 4 * index))

    def scalars(self, slot, fmt):
        target = self._target(slot)
        if target is None:
            return []
        size = struct.calcsize(fmt)
        start, length = self.reader.vector(target, size)
        return [self.reader._unpack(fmt, start + size * i)
                for i in range(length)]

    def bytes(self, slot):
        target = self._target(slot)
        if target is None:
            return None
        start, length = self.reader.vector(target)
        return bytes(self.reader.data[start:start + length])


class TFLiteFile:
    """The structure of a .tflite file, read with the standard library.

    Args:
        source: str or `os.PathLike` (a .tflite file), or bytes (its
            content).
        name: str or `None`. What error messages call the file. Defaults
            to the path, or `"<bytes>"`.

    Attributes:
        name: str.
        op_codes: list of `(name, is_custom)`, one per operator code.
            Builtin ops are named as LiteRT names them (`"GATHER"`) when
            `ai_edge_litert` is installed, else `"BUILTIN_<code>"`; custom
            ops (Flex ops included) by their custom code.
        signatures: dict from signature key to
            `{"inputs": {name: spec}, "outputs": {name: spec}}`, where a
            spec is `{"shape": [int, ...], "dtype": str}`.
        metadata_names: list of str. The names of the `Model.metadata`
            entries (the converter adds its own).
        description: dict or `None`. The keras_attn description (see
            `keras_attn_runtime.description`), checked.

    Raises:
        FileNotFoundError: if `source` is a path with no file.
        ValueError: if the file is not a .tflite flatbuffer, is truncated
            or corrupt, or its keras_attn description is malformed; the
            message names the file.

    Example:

    ```python
    from keras_attn_runtime import TFLiteFile
    model = TFLiteFile("lm.tflite")
    sorted(model.signatures)       # ["decode", "prefill"]
    model.description["kind"]      # "generator", if keras_attn embedded it
    ```
    """

    def __init__(self, source, name=None):
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            self.name = name or "<bytes>"
        elif isinstance(source, (str, os.PathLike)):
            if not os.path.isfile(source):
                raise FileNotFoundError(
                    f"No model file. Received: model_path={str(source)!r}"
                )
            data = _map(source)
            self.name = name or os.fspath(source)
        else:
            raise TypeError(
                "Expected `source` to be a path or bytes. Received: "
                f"source of type {type(source).__name__}"
            )
        self._data = data
        with self._reading():
            self._parse(_Reader(data))

    @contextlib.contextmanager
    def _reading(self):
        """Turns what a bad file raises into one ValueError naming it."""
        try:
            yield
        except (_Corrupt, UnicodeDecodeError) as error:
            raise ValueError(
                f"{self.name!r} is not a valid .tflite file: {error} "
                "(truncated or corrupt?)"
            ) from None

    def _parse(self, reader):
        if len(reader.data) < 8 or reader.data[4:8] != FILE_IDENTIFIER:
            found = bytes(reader.data[4:8])
            raise _Corrupt(
                f"no {FILE_IDENTIFIER.decode()} file identifier at bytes 4-8 "
                f"(found {found!r}; {len(reader.data)} bytes in all)"
            )
        model = reader.table(reader.indirect(0))
        self._builtin_codes = []
        self._custom_codes = []
        for code in model.tables(_MODEL["operator_codes"]):
            # Codes above 127 live only in `builtin_code`; older files fill
            # only `deprecated_builtin_code`: the larger is the real one.
            self._builtin_codes.append(max(
                code.scalar(_OPERATOR_CODE["deprecated_builtin_code"], "b"),
                code.scalar(_OPERATOR_CODE["builtin_code"], "i"),
            ))
            custom = code.string(_OPERATOR_CODE["custom_code"])
            self._custom_codes.append(custom.decode() if custom else None)
        self._subgraphs = model.tables(_MODEL["subgraphs"])
        self._buffers = model.tables(_MODEL["buffers"])
        self.signatures = {}
        self._signature_subgraphs = {}
        self._signature_inputs = {}
        for signature in model.tables(_MODEL["signature_defs"]):
            key = (signature.string(_SIGNATURE_DEF["signature_key"])
                   or b"").decode()
            index = signature.scalar(_SIGNATURE_DEF["subgraph_index"], "I")
            subgraph = self._subgraph(index)
            self._signature_subgraphs[key] = subgraph
            self._signature_inputs[key] = {
                (m.string(_TENSOR_MAP["name"]) or b"").decode():
                m.scalar(_TENSOR_MAP["tensor_index"], "I")
                for m in signature.tables(_SIGNATURE_DEF["inputs"])
            }
            self.signatures[key] = {
                part: self._tensor_maps(signature.tables(_SIGNATURE_DEF[part]),
                                        subgraph)
                for part in ("inputs", "outputs")
            }
        self._metadata = {}
        for entry in model.tables(_MODEL["metadata"]):
            name = (entry.string(_METADATA["name"]) or b"").decode()
            self._metadata[name] = entry.scalar(_METADATA["buffer"], "I")
        self.metadata_names = list(self._metadata)
        self.description = None
        if METADATA_NAME in self._metadata:
            raw = self._metadata_buffer(METADATA_NAME)
            try:
                parsed = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise _Corrupt(
                    f"its {METADATA_NAME!r} metadata is not UTF-8 JSON "
                    f"({error})"
                ) from None
            try:
                self.description = description_lib.check_description(parsed)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"{self.name!r} holds a malformed {METADATA_NAME!r} "
                    f"description: {error}"
                ) from None

    def _subgraph(self, index):
        if not 0 <= index < len(self._subgraphs):
            raise _Corrupt(f"subgraph {index} does not exist")
        return self._subgraphs[index]

    def _tensor(self, subgraph, index):
        tensor = subgraph.table_at(_SUBGRAPH["tensors"], index)
        if tensor is None:
            raise _Corrupt(f"tensor {index} does not exist")
        return tensor

    def _tensor_maps(self, maps, subgraph):
        specs = {}
        for tensor_map in maps:
            name = (tensor_map.string(_TENSOR_MAP["name"]) or b"").decode()
            tensor = self._tensor(
                subgraph, tensor_map.scalar(_TENSOR_MAP["tensor_index"], "I"))
            specs[name] = {
                "shape": tensor.scalars(_TENSOR["shape"], "i"),
                "dtype": TENSOR_TYPES.get(tensor.scalar(_TENSOR["type"], "b"),
                                          "other"),
            }
        return specs

    @property
    def op_codes(self):
        names = _builtin_names()
        return [
            (custom or "CUSTOM", True) if builtin == CUSTOM
            else (names.get(builtin, f"BUILTIN_{builtin}"), False)
            for builtin, custom in zip(self._builtin_codes,
                                       self._custom_codes)
        ]

    def metadata_buffer(self, name):
        """The bytes of the `Model.metadata` entry `name` (or `None`)."""
        with self._reading():
            return self._metadata_buffer(name)

    def _metadata_buffer(self, name):
        if name not in self._metadata:
            return None
        index = self._metadata[name]
        if not 0 <= index < len(self._buffers):
            raise _Corrupt(f"metadata {name!r} points to no buffer")
        buffer = self._buffers[index]
        offset = buffer.scalar(_BUFFER["offset"], "Q")
        if offset > 1:  # data stored after the flatbuffer (large models)
            size = buffer.scalar(_BUFFER["size"], "Q")
            if offset + size > len(self._data):
                raise _Corrupt(f"metadata {name!r} runs past the end")
            return self._data[offset:offset + size]
        return buffer.bytes(_BUFFER["data"]) or b""

    def embedding_rows(self, signature, input_name):
        """Rows of the table that a signature input indexes, or `None`.

        Finds the GATHER ops in the signature's subgraph that take the
        input's tensor as indices (the token embedding of `token_ids`)
        and returns the first dimension of their table: the vocabulary
        size the model was built for. `None` when there is no such op
        (another graph shape).
        """
        subgraph = self._signature_subgraphs.get(signature)
        if subgraph is None:
            raise ValueError(
                f"{self.name!r} has no signature {signature!r}. Received: "
                f"signature={signature!r} (signatures: "
                f"{sorted(self.signatures)})"
            )
        with self._reading():
            return self._embedding_rows(subgraph, signature, input_name)

    def _embedding_rows(self, subgraph, signature, input_name):
        index = self._signature_inputs[signature].get(input_name)
        if index is None:
            return None
        # Operators are stored in execution order: one pass follows the
        # ids through value-preserving ops to the GATHERs that use them.
        sources = {index}
        for operator in subgraph.tables(_SUBGRAPH["operators"]):
            inputs = operator.scalars(_OPERATOR["inputs"], "i")
            code_index = operator.scalar(_OPERATOR["opcode_index"], "I")
            if not 0 <= code_index < len(self._builtin_codes):
                raise _Corrupt(f"operator code {code_index} does not exist")
            code = self._builtin_codes[code_index]
            if code == GATHER and len(inputs) == 2 and inputs[1] in sources:
                shape = self._tensor(subgraph, inputs[0]).scalars(
                    _TENSOR["shape"], "i")
                if len(shape) == 2:
                    return shape[0]
            elif code in _ID_PRESERVING and sources.intersection(inputs):
                sources.update(operator.scalars(_OPERATOR["outputs"], "i"))
        return None


def _map(path):
    """The file's bytes, memory-mapped (no copy of a large model)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


@functools.cache
def _builtin_names():
    """{code: name} from LiteRT's generated schema, if it is installed."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return {}
    return {value: key for key, value in vars(schema.BuiltinOperator).items()
            if not key.startswith("_")}


def read_metadata(source):
    """The keras_attn description embedded in a .tflite file, or `None`.

    Args:
        source: str or `os.PathLike` (the .tflite path), or its bytes.

    Returns:
        dict (see `keras_attn_runtime.description`) or `None` when the
        file carries none.

    Raises:
        FileNotFoundError, ValueError: as `TFLiteFile`.
    """
    return TFLiteFile(source).description


def op_names(source):
    """The sorted, unique op names of a .tflite file (see `TFLiteFile`)."""
    return sorted({name for name, _ in TFLiteFile(source).op_codes})
