"""Safe model files: a learnware's model travels as bytes whose loading runs no code from the file.

The format is skops (a zip holding ``schema.json`` plus ``.npy`` arrays saved without pickle).
skops already refuses to construct types outside a trust list; on top of it this module adds:

* an explicit allow-list (:data:`ALLOWED_TYPES`) of well-known scikit-learn / numpy types, built
  from ``sklearn.utils.all_estimators()`` plus the exact internal types skops reports for common
  fitted models, and checked by our own scan of ``schema.json`` (every type and every loader must
  be allow-listed, whatever skops trusts by default) *before* skops sees the file;
* size guards: raw size, zip entry count, total declared uncompressed size (absolute, and at
  most :data:`MAX_EXPANSION_RATIO` times the file, so a small file cannot inflate to a large
  one), size of ``schema.json`` (absolute and per node), nesting depth, and every ``.npy`` header
  (no object dtype, payload size must match the declared shape) so nothing is allocated from a
  lying header;
* no padding: the archive holds ``schema.json`` and exactly the arrays its nodes name, entries
  back to back with no bytes between, before or after them, every deflate stream ending exactly
  at its declared size. Each entry is streamed once through a bounded inflater to check this
  (``zipfile.read`` would inflate a whole deflate stream first), so skops can then be handed the
  original bytes: they are exactly what was verified, and no rebuilt copy is needed;
* an expanded-size bound (:data:`DEFAULT_MAX_NODES`): skops lets a node stand for an earlier
  one by its ``__id__``, and both its audit and the loaded model (e.g. a kernel ``Sum(k, k)``
  nested 40 times over one shared ``k``) walk every path through such shared references, so a
  5 KB file can cost 2**40 steps. Nodes are counted as they would expand, in linear time;
* structural validation after loading, for the allow-listed types whose native code indexes
  arrays without bounds checks (skops itself flags ``Tree`` and ``TreePredictor`` for this):
  decision trees (child/feature indices, single-tree shape, recorded depth), histogram-gradient-
  boosting predictors (and their categorical bitsets), KD/ball trees and their metrics, libsvm
  models, gradient-boosting stage widths and k-means centres. A crafted file that passes the
  type check but holds out-of-range indices is refused instead of crashing (or reading memory)
  at predict time.

Residual risk: these checks cover the common regressors/classifiers; for the other allow-listed
estimators, memory safety against crafted attributes rests on scikit-learn's own input checks.

Every failure, whatever the bytes, is an :class:`~protocol.errors.UnsafeModelError`.
"""
from __future__ import annotations

import functools
import io
import json
import math
import struct
import threading
import warnings
import zipfile
import zlib
from typing import Any, Iterable, NamedTuple

import numpy as np

from protocol.errors import ModelTooCostlyError, UnsafeModelError

__all__ = ["ALLOWED_TYPES", "ALLOWED_LOADERS", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_NODES",
           "allow_lists", "dump_model", "load_model"]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024          # raw file
DEFAULT_MAX_UNCOMPRESSED = 1024 * 1024 * 1024  # sum of declared entry sizes
DEFAULT_MAX_ENTRIES = 65_535                   # the most a zip without zip64 records holds
#: nodes of ``schema.json`` counted as skops expands shared references. Real models need far
#: fewer: a 500-stage gradient boosting 35k, a 500-tree forest 29k, HGB (300 iterations) 3k.
DEFAULT_MAX_NODES = 200_000
#: total uncompressed size <= max(MIN_UNCOMPRESSED_ALLOWANCE, MAX_EXPANSION_RATIO x file size).
#: ``dump_model`` files (deflate level 1) expand 1.0x (MLP, KNN) to 5.1x (tree ensembles).
MAX_EXPANSION_RATIO = 8
MIN_UNCOMPRESSED_ALLOWANCE = 16 * 1024 * 1024
MAX_SCHEMA_BYTES = 64 * 1024 * 1024
#: schema.json <= SCHEMA_BASE_BYTES + SCHEMA_BYTES_PER_NODE x nodes (real files: 40-310 B/node)
SCHEMA_BASE_BYTES = 64 * 1024
SCHEMA_BYTES_PER_NODE = 2048
_NPY_PREFIX = 1 << 16                          # numpy refuses npy headers over 10,000 bytes
MAX_SCHEMA_DEPTH = 200                         # JSON nesting; real models stay under ~30
_ZIP_MAGIC = b"PK\x03\x04"
_FIELD = "model"


# --------------------------------------------------------------------------------------------
# The allow-list
# --------------------------------------------------------------------------------------------

def _name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__name__}"


def _subclasses_in(module: Any, base: type) -> list[str]:
    out = []
    for attr in dir(module):
        obj = getattr(module, attr, None)
        if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == module.__name__:
            out.append(_name(obj))
    return out


def _build_allow_lists() -> tuple[frozenset[str], frozenset[str], dict[str, frozenset[str]]]:
    """(classes, functions, loader -> the only types that loader may name)."""
    from sklearn.utils import Bunch, all_estimators

    classes: set[str] = set()
    functions: set[str] = set()
    # Python primitives and containers (skops stores dict/list/tuple/set/slice nodes by type).
    containers = {"builtins.list", "builtins.dict", "builtins.tuple", "builtins.set",
                  "builtins.slice", "collections.OrderedDict", _name(Bunch)}
    classes.update(f"builtins.{t}" for t in ("int", "float", "str", "bool", "complex"))
    classes.update(containers)
    # numpy: arrays, dtypes, numeric/bool scalar types, random states.
    np_scalars = {_name(t) for t in set(np.sctypeDict.values())
                  if issubclass(t, (np.number, np.bool_)) and _name(t).startswith("numpy")}
    bit_generators = {f"numpy.random.{a}" for a in dir(np.random)
                      if isinstance(getattr(np.random, a), type)
                      and issubclass(getattr(np.random, a), np.random.BitGenerator)
                      and getattr(np.random, a) is not np.random.BitGenerator}
    classes.update(np_scalars | bit_generators)
    classes.update({"numpy.ndarray", "numpy.dtype", "numpy.random.mtrand.RandomState",
                    "numpy.random._generator.Generator"})
    # Every public scikit-learn estimator, transformer, pipeline and meta-estimator.
    classes.update(_name(cls) for _, cls in all_estimators()
                   if cls.__module__.startswith("sklearn."))
    # ... and the internal types skops reports for common fitted models.
    from sklearn._loss import link, loss
    classes.update(_subclasses_in(loss, loss.BaseLoss))
    classes.update(_subclasses_in(link, link.BaseLink))
    classes.add(_name(link.Interval))
    cy_losses: set[str] = set()
    try:
        from sklearn._loss import _loss as cyloss
        from sklearn.linear_model import _sgd_fast
        cy_losses.update(_name(getattr(cyloss, a)) for a in dir(cyloss)
                         if a.startswith("Cy") and isinstance(getattr(cyloss, a), type))
        cy_losses.update(_subclasses_in(_sgd_fast, cyloss.CyLossFunction))
    except (ImportError, AttributeError):  # pragma: no cover - older scikit-learn
        pass
    classes.update(cy_losses)
    from sklearn.gaussian_process import kernels
    classes.update(_subclasses_in(kernels, kernels.Kernel))
    from sklearn.neural_network import _stochastic_optimizers as opt
    classes.update(_name(c) for c in (opt.AdamOptimizer, opt.SGDOptimizer))
    from sklearn.calibration import _CalibratedClassifier, _SigmoidCalibration
    classes.update(_name(c) for c in (_CalibratedClassifier, _SigmoidCalibration))
    from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.neighbors import BallTree, KDTree
    from sklearn.tree._tree import Tree
    # These hold raw indices used unchecked by native code: structurally validated after load.
    classes.update(_name(c) for c in (Tree, TreePredictor, _BinMapper, KDTree, BallTree))
    classes.update(f"sklearn.metrics._dist_metrics.{c}Distance64" for c in
                   ("Euclidean", "Manhattan", "Chebyshev", "Minkowski"))
    classes.add("functools.partial")

    # Functions: looked up by name, never called on load. Pure elementwise numpy ufuncs (for
    # FunctionTransformer), univariate feature-selection score functions, and the
    # ``partial(check_array, ...)`` HistGradientBoosting keeps for categorical features.
    from sklearn import feature_selection as fs
    from sklearn.utils.validation import check_array
    functions.update(f"numpy.{a}" for a in dir(np) if isinstance(getattr(np, a, None), np.ufunc))
    functions.update(_name(getattr(fs, f)) for f in ("f_classif", "f_regression", "chi2",
                                                     "r_regression", "mutual_info_classif",
                                                     "mutual_info_regression"))
    functions.add(_name(check_array))

    # Loaders that *call* the named type get exactly the types they are meant for.
    per_loader = {
        "FunctionNode": frozenset(functions),
        "NdArrayNode": frozenset({"numpy.ndarray"} | np_scalars),
        "DTypeNode": frozenset({"numpy.dtype"}),
        "TreeNode": frozenset({_name(Tree)}),
        "LossNode": frozenset(cy_losses),
        "RandomStateNode": frozenset({"numpy.random.mtrand.RandomState"}),
        "RandomGeneratorNode": frozenset({"numpy.random._generator.Generator"}),
        "PartialNode": frozenset({"functools.partial"}),
        "DictNode": frozenset({"builtins.dict", "collections.OrderedDict", _name(Bunch)}),
        "ListNode": frozenset({"builtins.list"}),
        "SetNode": frozenset({"builtins.set"}),
        "TupleNode": frozenset({"builtins.tuple"}),
        "SliceNode": frozenset({"builtins.slice"}),
        "TypeNode": frozenset(classes),
        "ObjectNode": frozenset(classes - containers - {"functools.partial"}),
        "CachedNode": frozenset(classes | functions),
        "JsonNode": frozenset(),  # a JSON literal: never a type lookup, any claimed class
    }
    per_loader["_bit_generators"] = frozenset(bit_generators)
    return frozenset(classes), frozenset(functions), per_loader


class AllowLists(NamedTuple):
    """The allow-lists, built once per process on first use (building them imports every
    scikit-learn estimator, about 3 s: a program that never loads a model file, such as
    ``lwm --help``, does not pay for it)."""

    types: frozenset[str]         # every class or function a model file may name
    loaders: dict[str, frozenset[str]]  # skops node kind -> the only types it may name
    bit_generators: frozenset[str]


_ALLOW_LISTS: AllowLists | None = None
_ALLOW_LISTS_LOCK = threading.Lock()


def allow_lists() -> AllowLists:
    """The allow-lists of this process (built on the first call, then cached). Built under a
    lock: scikit-learn's ``all_estimators`` walks and imports its packages, which fails
    (``KeyError`` in ``pkgutil``) when two threads (a threaded server's first publishes, say)
    do it at once."""
    global _ALLOW_LISTS
    if _ALLOW_LISTS is None:
        with _ALLOW_LISTS_LOCK:
            if _ALLOW_LISTS is None:
                classes, functions, per_loader = _build_allow_lists()
                bit_generators = per_loader.pop("_bit_generators")
                _ALLOW_LISTS = AllowLists(classes | functions, per_loader, bit_generators)
    return _ALLOW_LISTS


def __getattr__(name: str):
    """``ALLOWED_TYPES``: fully qualified names of every type (or function) a model file may
    contain. ``ALLOWED_LOADERS``: skops node kinds a model file may use, each limited to the
    types it is meant for (a loader that calls its type, e.g. ``NdArrayNode`` or ``LossNode``,
    cannot name a function). Left out on purpose: methods, operator functions,
    ``ConstructorFromReduceNode`` (calls a named constructor), bytes, sparse and masked arrays,
    defaultdicts: no common model needs them. Both built on first access (:func:`allow_lists`)."""
    if name == "ALLOWED_TYPES":
        return allow_lists().types
    if name == "ALLOWED_LOADERS":
        return frozenset(allow_lists().loaders)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.lru_cache(maxsize=1)
def _skops_protocol() -> int | None:
    """The skops file protocol this process writes and accepts (importing skops imports
    scikit-learn: done on first use, not at import)."""
    try:
        from skops.io._protocol import PROTOCOL
    except ImportError:  # pragma: no cover
        return None
    return PROTOCOL


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def dump_model(model: Any) -> bytes:
    """Serialise a fitted scikit-learn model to skops bytes.

    Refuses (``UnsafeModelError``) models that the market would refuse to load: anything holding
    a type outside :data:`ALLOWED_TYPES` (named in the message) or inconsistent internals.
    """
    import skops.io as sio
    from sklearn.base import BaseEstimator

    if not isinstance(model, BaseEstimator):
        raise UnsafeModelError(f"a model must be a scikit-learn estimator, got "
                               f"{type(model).__module__}.{type(model).__qualname__}",
                               field=_FIELD)
    try:
        # Deflate level 1: ~4x smaller than skops' default (stored) for tree ensembles, at no
        # extra time; the zip-bomb guards on load bound what any file may inflate to.
        data = sio.dumps(model, compression=zipfile.ZIP_DEFLATED, compresslevel=1)
    except Exception as exc:  # skops refuses some types outright (e.g. Birch, local classes)
        raise UnsafeModelError(f"cannot write this model as a safe model file: {exc}",
                               field=_FIELD) from None
    # Same limits as load_model's defaults: a file the market cannot load is refused now.
    schema = _read_archive(data, DEFAULT_MAX_BYTES, DEFAULT_MAX_UNCOMPRESSED,
                           DEFAULT_MAX_ENTRIES, DEFAULT_MAX_NODES)
    present: set[str] = set()
    bad = _scan_schema(schema, present)
    if bad:
        raise _untrusted_error(bad, when="dump")
    try:
        _validate_structure(model)
    except UnsafeModelError:
        raise
    except Exception as exc:
        raise UnsafeModelError(f"cannot check this model's internals ({type(exc).__name__}: "
                               f"{exc})", field=_FIELD) from None
    return data


def load_model(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES,
               max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED,
               max_entries: int = DEFAULT_MAX_ENTRIES,
               max_nodes: int = DEFAULT_MAX_NODES) -> Any:
    """Load a model file without running code from it.

    Any problem -- not a zip, a raw pickle, a zip bomb, padding, an object graph that expands
    past ``max_nodes`` through shared references, types outside :data:`ALLOWED_TYPES`
    (all named in the message and in ``details["untrusted_types"]``), a corrupt or crafted
    structure -- raises ``UnsafeModelError``; no other exception escapes.
    """
    try:
        return _load(data, max_bytes, max_uncompressed_bytes, max_entries, max_nodes)
    except UnsafeModelError:
        raise
    except RecursionError:
        raise UnsafeModelError("model file is nested too deeply to load", field=_FIELD) from None
    except MemoryError:
        raise UnsafeModelError("model file needs more memory than available to load",
                               field=_FIELD) from None
    except Exception as exc:
        msg = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise UnsafeModelError(f"model file is corrupt or not a loadable skops model "
                               f"({type(exc).__name__}: {msg})", field=_FIELD) from None


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _load(data: Any, max_bytes: int, max_uncompressed: int, max_entries: int,
          max_nodes: int) -> Any:
    import skops.io as sio
    from sklearn.base import BaseEstimator

    schema = _read_archive(data, max_bytes, max_uncompressed, max_entries, max_nodes)
    data = bytes(data)  # exactly the verified bytes: no padding, every stream exact
    present: set[str] = set()
    bad = _scan_schema(schema, present)
    if bad:
        # Name everything: our own scan plus whatever skops' audit reports on top.
        raise _untrusted_error(bad | _skops_untrusted(data), when="load")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # skops is told to trust only the allow-listed types this file uses (all checked
            # above): the same guarantee as the whole list, and its audit of every node against
            # the trust list stays short instead of scanning ~430 names per node.
            model = sio.loads(data, trusted=sorted(present))
    except TypeError as exc:
        from skops.io.exceptions import UntrustedTypesFoundException
        if isinstance(exc, UntrustedTypesFoundException):
            raise _untrusted_error(_skops_untrusted(data) - allow_lists().types or {"<unknown>"},
                                   when="load") from None
        raise
    if not isinstance(model, BaseEstimator):
        raise UnsafeModelError(f"model file holds a {type(model).__module__}."
                               f"{type(model).__qualname__}, not a scikit-learn estimator",
                               field=_FIELD)
    _validate_structure(model)
    return model


def _read_archive(data: Any, max_bytes: int, max_uncompressed: int, max_entries: int,
                  max_nodes: int = DEFAULT_MAX_NODES) -> dict:
    """The parsed ``schema.json``, after every guard on the archive as a whole.

    Every entry is streamed once through a bounded inflater (never past its declared size,
    never holding more than one chunk of an array), so the declared sizes -- capped in total,
    absolutely and relative to the file -- bound memory and time. Afterwards the bytes are
    known to hold exactly ``schema.json`` and the arrays it names, nothing else.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UnsafeModelError(f"a model file must be bytes, got {type(data).__name__}",
                               field=_FIELD)
    data = bytes(data)
    if len(data) > max_bytes:
        raise UnsafeModelError(f"model file is {len(data)} bytes, over the {max_bytes}-byte limit",
                               field=_FIELD)
    if not data.startswith(_ZIP_MAGIC):
        hint = ""
        if data[:1] == b"\x80" or data[:1] in (b"(", b"c", b"]", b"}"):
            hint = " (it looks like a pickle, which is never loaded)"
        raise UnsafeModelError("not a skops model file: it is not a zip archive" + hint,
                               field=_FIELD)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data), "r")
        infos = zf.infolist()
    except Exception as exc:
        raise UnsafeModelError(f"not a skops model file: unreadable zip ({exc})",
                               field=_FIELD) from None
    if len(infos) > max_entries:
        raise UnsafeModelError(f"model file has {len(infos)} entries, over the limit of "
                               f"{max_entries}", field=_FIELD)
    total = sum(max(int(i.file_size), 0) for i in infos)
    if total > max_uncompressed:
        raise UnsafeModelError(f"model file would decompress to {total} bytes, over the "
                               f"{max_uncompressed}-byte limit (zip bomb?)", field=_FIELD)
    allowance = max(MIN_UNCOMPRESSED_ALLOWANCE, MAX_EXPANSION_RATIO * len(data))
    if total > allowance:
        raise UnsafeModelError(f"model file would decompress to {total} bytes, more than "
                               f"{MAX_EXPANSION_RATIO} times its {len(data)} bytes (limit "
                               f"{allowance}; zip bomb or padding?)", field=_FIELD)
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise UnsafeModelError("model file has two zip entries of the same name", field=_FIELD)
    by_name = {i.filename: i for i in infos}
    if "schema.json" not in by_name:
        raise UnsafeModelError("not a skops model file: no schema.json inside the zip",
                               field=_FIELD)
    schema_size = by_name["schema.json"].file_size
    if schema_size > MAX_SCHEMA_BYTES:
        raise UnsafeModelError(f"model file's schema.json is {schema_size} bytes, over the "
                               f"{MAX_SCHEMA_BYTES}-byte limit", field=_FIELD)
    starts = _check_layout(data, infos)
    try:
        schema = json.loads(b"".join(_entry_chunks(data, by_name["schema.json"],
                                                   starts["schema.json"])))
    except UnsafeModelError:
        raise
    except RecursionError:
        raise UnsafeModelError("model file's schema.json is nested too deeply",
                               field=_FIELD) from None
    except Exception as exc:
        raise UnsafeModelError(f"model file's schema.json is unreadable ({exc})",
                               field=_FIELD) from None
    if not isinstance(schema, dict):
        raise UnsafeModelError("model file's schema.json is not an object", field=_FIELD)
    protocol, accepted = schema.get("protocol"), _skops_protocol()
    if accepted is not None and (type(protocol) is not int or protocol != accepted):
        raise UnsafeModelError(f"model file uses skops protocol {protocol!r}; only protocol "
                               f"{accepted} is accepted", field=_FIELD)
    n_nodes, files = _count_expanded_nodes(schema, max_nodes)
    schema_limit = SCHEMA_BASE_BYTES + SCHEMA_BYTES_PER_NODE * n_nodes
    if schema_size > schema_limit:
        raise UnsafeModelError(f"model file's schema.json is {schema_size} bytes for {n_nodes} "
                               f"nodes, over the {schema_limit}-byte limit (padding?)",
                               field=_FIELD)
    stray = sorted(set(by_name) - files - {"schema.json"})
    if stray:
        raise UnsafeModelError(f"model file holds {len(stray)} zip entries no node refers to "
                               f"(e.g. {stray[0][:80]!r}): padding is refused", field=_FIELD)
    missing = sorted(files - set(by_name))
    if missing:
        raise UnsafeModelError(f"model file refers to a missing entry {missing[0][:80]!r}",
                               field=_FIELD)
    for name in sorted(files):
        _check_npy_entry(name, _entry_chunks(data, by_name[name], starts[name]))
    return schema


def _check_layout(data: bytes, infos: list[zipfile.ZipInfo]) -> dict[str, int]:
    """Where each entry's data starts, after checking the archive is entries back to back, then
    the central directory, then an end record without comment: no byte unaccounted for."""
    eocd = len(data) - 22
    if eocd < 0 or data[eocd:eocd + 4] != b"PK\x05\x06":
        raise UnsafeModelError("model file has bytes after its zip directory, or a zip comment: "
                               "padding is refused", field=_FIELD)
    cd_size, cd_offset = struct.unpack_from("<II", data, eocd + 12)
    if cd_offset + cd_size != eocd:
        raise UnsafeModelError("model file has bytes around its zip directory: padding is "
                               "refused", field=_FIELD)
    starts: dict[str, int] = {}
    pos = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset != pos or data[pos:pos + 4] != _ZIP_MAGIC or pos + 30 > eocd:
            raise UnsafeModelError("model file has bytes between its zip entries: padding is "
                                   "refused", field=_FIELD)
        flags, method = struct.unpack_from("<HH", data, pos + 6)
        if flags & 0x1:
            raise UnsafeModelError("model file has an encrypted zip entry", field=_FIELD)
        if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UnsafeModelError(f"model file uses zip compression method {method}; only "
                                   f"stored and deflated entries are read", field=_FIELD)
        n_name, n_extra = struct.unpack_from("<HH", data, pos + 26)
        starts[info.filename] = pos + 30 + n_name + n_extra
        pos = starts[info.filename] + info.compress_size
        if flags & 0x8:  # a data descriptor follows: 12 bytes, or 16 with its signature
            pos += 16 if data[pos:pos + 4] == b"PK\x07\x08" else 12
    if pos != cd_offset:
        raise UnsafeModelError("model file has bytes between its zip entries and its directory: "
                               "padding is refused", field=_FIELD)
    return starts


def _entry_chunks(data: bytes, info: zipfile.ZipInfo, start: int) -> Iterable[bytes]:
    """The entry's bytes in chunks of at most 1 MiB, never inflating past its declared size;
    raises unless the stream ends exactly there, all its compressed bytes used, CRC intact."""
    size, raw = int(info.file_size), memoryview(data)[start:start + info.compress_size]
    if len(raw) != info.compress_size:
        raise UnsafeModelError(f"zip entry {info.filename!r} is truncated", field=_FIELD)
    crc, n = 0, 0
    chunk = 1 << 20
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != size:
            raise UnsafeModelError(f"stored zip entry {info.filename!r} holds "
                                   f"{info.compress_size} bytes, not the {size} it declares",
                                   field=_FIELD)
        for i in range(0, size, chunk):
            part = bytes(raw[i:i + chunk])
            crc = zlib.crc32(part, crc)
            yield part
        n = size
    else:
        inflater = zlib.decompressobj(-15)
        pending = raw
        while pending or inflater.unconsumed_tail:
            feed = inflater.unconsumed_tail or bytes(pending[:chunk])
            if not inflater.unconsumed_tail:
                pending = pending[chunk:]
            try:
                part = inflater.decompress(feed, min(chunk, size - n + 1))
            except zlib.error as exc:
                raise UnsafeModelError(f"zip entry {info.filename!r} is corrupt ({exc})",
                                       field=_FIELD) from None
            n += len(part)
            if n > size:
                raise UnsafeModelError(f"zip entry {info.filename!r} inflates past the {size} "
                                       f"bytes it declares", field=_FIELD)
            crc = zlib.crc32(part, crc)
            if part:
                yield part
            if inflater.eof:
                break
        if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail or pending:
            raise UnsafeModelError(f"zip entry {info.filename!r} does not end where its "
                                   f"compressed data ends (padding?)", field=_FIELD)
    if n != size:
        raise UnsafeModelError(f"zip entry {info.filename!r} holds {n} bytes, not the "
                               f"{size} it declares", field=_FIELD)
    if crc != info.CRC:
        raise UnsafeModelError(f"zip entry {info.filename!r} fails its CRC check", field=_FIELD)


def _check_npy_entry(name: str, chunks: Iterable[bytes]) -> None:
    """Validate an array entry's header before numpy allocates anything from it: a plain dtype
    and a payload of exactly the declared shape. Streams the entry; keeps only its header."""
    from numpy.lib import format as npformat

    head, n = bytearray(), 0
    for part in chunks:
        n += len(part)
        if len(head) < _NPY_PREFIX:
            head += part[:_NPY_PREFIX - len(head)]
    if not head.startswith(b"\x93NUMPY"):
        raise UnsafeModelError(f"zip entry {name!r} is not a numpy array", field=_FIELD)
    fh = io.BytesIO(bytes(head))
    version = npformat.read_magic(fh)
    if version == (1, 0):
        shape, _fortran, dtype = npformat.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _fortran, dtype = npformat.read_array_header_2_0(fh)
    else:
        raise UnsafeModelError(f"array {name!r} has unsupported npy version {version}",
                               field=_FIELD)
    if dtype.hasobject:
        raise UnsafeModelError(f"array {name!r} has an object dtype (would need pickle)",
                               field=_FIELD)
    n_items = math.prod(int(s) for s in shape)
    payload = n - fh.tell()
    if n_items * dtype.itemsize != payload:
        raise UnsafeModelError(f"array {name!r} declares shape {shape} of {dtype} but holds "
                               f"{payload} bytes", field=_FIELD)


def _count_expanded_nodes(schema: dict, limit: int) -> tuple[int, set[str]]:
    """(number of nodes, names of the entries they read), refusing a graph that expands past
    ``limit`` nodes or refers to itself.

    skops keeps every node with an ``__id__`` and, meeting that id again (or a ``CachedNode``
    of it), uses the node built first: the later occurrence's own content is ignored, but the
    shared node is walked again by the audit and by the loaded model. Which occurrence is built
    first depends on skops' traversal order, so each id counts as its *largest* occurrence: an
    upper bound whatever the order, and exact for files skops writes (it writes every occurrence
    in full). Sizes are computed bottom-up once per node and per id: linear time.
    """
    # Pass 1: the node graph (node index -> child node indices), ids, referenced files.
    ids: list[Any] = []          # per node: its __id__ (None if anonymous)
    cached: list[bool] = []      # per node: a CachedNode (a pure reference to its id)
    children: list[list[int]] = []
    defs: dict[int, list[int]] = {}
    files: set[str] = set()
    stack: list[tuple[Any, int]] = [(schema, -1)]
    while stack:
        value, owner = stack.pop()
        if isinstance(value, list):
            stack.extend((v, owner) for v in value)
            continue
        if not isinstance(value, dict):
            continue
        if "__loader__" not in value:
            stack.extend((v, owner) for v in value.values())
            continue
        i = len(ids)
        if i > limit:
            raise _too_big(limit)
        node_id = value.get("__id__")
        if node_id is not None and (type(node_id) is not int):
            raise UnsafeModelError("model file has a node whose __id__ is not an integer",
                                   field=_FIELD)
        is_ref = value.get("__loader__") == "CachedNode"
        if is_ref and not node_id:
            raise UnsafeModelError("model file has a reference node without an id", field=_FIELD)
        ids.append(node_id or None)
        cached.append(is_ref)
        children.append([])
        if owner >= 0:
            children[owner].append(i)
        if node_id and not is_ref:
            defs.setdefault(node_id, []).append(i)
        if isinstance(value.get("file"), str):
            files.add(value["file"])
        if not is_ref:  # skops reads no child of a reference node
            stack.extend((v, i) for k, v in value.items() if k != "__id__")
    if not ids:
        raise UnsafeModelError("not a skops model file: schema.json has no root node",
                               field=_FIELD)
    # Pass 2: sizes, post-order over ("node", i) and ("id", x) with cycle detection.
    cap = limit + 1
    node_size: dict[int, int] = {}
    id_size: dict[int, int] = {}
    on_path: set[tuple[str, int]] = set()

    def deps(key: tuple[str, int]) -> list[tuple[str, int]]:
        kind, k = key
        if kind == "id":
            if k not in defs:
                raise UnsafeModelError(f"model file refers to an unknown node id {k}",
                                       field=_FIELD)
            return [("node", d) for d in defs[k]]
        if cached[k]:
            return [("id", ids[k])]
        return [("id", ids[c]) if ids[c] is not None else ("node", c) for c in children[k]]

    def known(key: tuple[str, int]) -> bool:
        return key[1] in (id_size if key[0] == "id" else node_size)

    def value_of(key: tuple[str, int]) -> int:
        return id_size[key[1]] if key[0] == "id" else node_size[key[1]]

    root: tuple[str, int] = ("node", 0)
    work: list[tuple[tuple[str, int], bool]] = [(root, False)]
    while work:
        key, expanded = work.pop()
        if known(key):
            continue
        if expanded:
            on_path.discard(key)
            vals = [value_of(d) for d in deps(key)]
            if key[0] == "id":
                id_size[key[1]] = max(vals)
            elif cached[key[1]]:
                node_size[key[1]] = vals[0]
            else:
                node_size[key[1]] = min(cap, 1 + sum(vals))
            if value_of(key) > limit:
                raise _too_big(limit)
            continue
        if key in on_path:
            raise UnsafeModelError("model file has a node that contains itself (through a "
                                   "shared reference)", field=_FIELD)
        on_path.add(key)
        work.append((key, True))
        for d in deps(key):
            if not known(d):
                if d in on_path:
                    raise UnsafeModelError("model file has a node that contains itself (through "
                                           "a shared reference)", field=_FIELD)
                work.append((d, False))
    return node_size[0], files


def _too_big(limit: int) -> UnsafeModelError:
    return ModelTooCostlyError(f"model file's object graph expands to more than {limit} nodes "
                               f"(counting shared references as often as they are used): too "
                               f"costly to load or predict with", field=_FIELD,
                               details={"limit": limit, "resource": "nodes"})


def _scan_schema(schema: dict, present: set[str] | None = None) -> set[str]:
    """Every type name (or loader) in ``schema.json`` that is not allow-listed.

    ``present`` (when given) collects every allow-listed type name the file uses.

    Independent of skops' own audit and of what skops trusts by default. Iterative, with a depth
    limit, so a hostile file cannot exhaust the stack here or later in skops' recursive loader.
    """
    bad: set[str] = set()
    allowed = allow_lists()
    stack: list[tuple[Any, int]] = [(schema, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise UnsafeModelError(f"model file is nested deeper than {MAX_SCHEMA_DEPTH} levels",
                                   field=_FIELD)
        if isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        if "__loader__" in node or "__class__" in node or "__module__" in node:
            loader, mod, cls = node.get("__loader__"), node.get("__module__"), node.get("__class__")
            if not all(isinstance(v, str) for v in (loader, mod, cls)):
                raise UnsafeModelError("model file has a malformed node (missing or non-string "
                                       "__loader__/__module__/__class__)", field=_FIELD)
            name = f"{mod}.{cls}"
            if loader == "JsonNode":
                pass  # plain JSON literal: json.loads, never a type lookup
            elif name not in allowed.types:
                bad.add(name)
            elif name not in allowed.loaders.get(loader, ()):
                bad.add(f"{name} (as {loader})")
            elif present is not None:
                present.add(name)
            if loader == "RandomGeneratorNode":
                try:
                    bg = json.loads(node["content"]["bit_generator"]["content"]["bit_generator"]
                                    ["content"])
                except Exception:
                    bg = None
                bg_name = f"numpy.random.{bg}"
                if not isinstance(bg, str) or bg_name not in allowed.bit_generators:
                    bad.add(bg_name)
        for v in node.values():
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1))
    return bad


def _skops_untrusted(data: bytes) -> set[str]:
    """What skops' own audit reports as untrusted (best effort; for naming in errors)."""
    try:
        import skops.io as sio
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return set(sio.get_untrusted_types(data=data)) - allow_lists().types
    except Exception:
        return set()


def _untrusted_error(bad: Iterable[str], when: str) -> UnsafeModelError:
    names = sorted(set(bad))
    verb = "holds" if when == "load" else "contains"
    msg = (f"model file {verb} type(s) outside the allow-list: {', '.join(names)}; only "
           f"scikit-learn estimators, their internals and numpy types are allowed")
    if when == "dump":
        msg = (f"model contains type(s) outside the allow-list: {', '.join(names)}; the market "
               f"only accepts scikit-learn estimators, their internals and numpy types")
    return UnsafeModelError(msg, field=_FIELD, details={"untrusted_types": names})


# --------------------------------------------------------------------------------------------
# Structural validation of types whose native code trusts its indices
# --------------------------------------------------------------------------------------------

def _bad(msg: str) -> UnsafeModelError:
    return UnsafeModelError(f"model file has inconsistent internals: {msg}", field=_FIELD)


def _validate_structure(model: Any) -> None:
    """Walk the loaded object graph and check every index-bearing native structure."""
    from sklearn.base import BaseEstimator
    from sklearn.ensemble._bagging import BaseBagging
    from sklearn.ensemble._forest import BaseForest
    from sklearn.ensemble._gb import BaseGradientBoosting
    from sklearn.ensemble._hist_gradient_boosting.gradient_boosting import BaseHistGradientBoosting
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.neighbors._ball_tree import BallTree
    from sklearn.neighbors._kd_tree import KDTree
    from sklearn.svm._base import BaseLibSVM
    from sklearn.tree import BaseDecisionTree
    from sklearn.tree._tree import Tree

    tree_family = (BaseDecisionTree, BaseForest, BaseGradientBoosting, BaseHistGradientBoosting)
    seen: set[int] = set()
    deferred: list[Any] = []  # checks that run fitted code: only once everything is validated
    # (object, n_features required by the enclosing tree-family estimator, HGB context)
    stack: list[tuple[Any, int | None, Any]] = [(model, None, None)]
    while stack:
        obj, nf, hgb = stack.pop()
        if obj is None or isinstance(obj, (str, bytes, int, float, bool, np.generic)):
            continue
        if id(obj) in seen:
            # Shared objects are checked under every context they appear in.
            if not isinstance(obj, (Tree, TreePredictor)):
                continue
        seen.add(id(obj))
        if isinstance(obj, Tree):
            _check_tree(obj, nf)
            continue
        if isinstance(obj, TreePredictor):
            _check_predictor(obj, hgb)
            continue
        if isinstance(obj, (KDTree, BallTree)):
            _check_binary_tree(obj)
            continue
        if isinstance(obj, dict):
            stack.extend((v, nf, hgb) for v in obj.values())
            continue
        if isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend((v, nf, hgb) for v in obj)
            continue
        if isinstance(obj, np.ndarray):
            if obj.dtype == object:
                stack.extend((v, nf, hgb) for v in obj.ravel())
            continue
        child_nf, child_hgb = None, None
        if isinstance(obj, tree_family):
            own = getattr(obj, "n_features_in_", None)
            if own is not None:
                own = _as_int(own, "n_features_in_")
                if nf is not None and own != nf:
                    raise _bad(f"{type(obj).__name__} expects {own} features inside an "
                               f"ensemble that expects {nf}")
                child_nf = own
            else:
                child_nf = nf
            if isinstance(obj, BaseHistGradientBoosting) and hasattr(obj, "_predictors"):
                child_hgb = _hgb_context(obj)
            if isinstance(obj, BaseGradientBoosting) and hasattr(obj, "estimators_"):
                _check_gb(obj)
                deferred.append(obj)
        if isinstance(obj, BaseBagging) and hasattr(obj, "estimators_"):
            _check_bagging(obj)
        if isinstance(obj, BaseLibSVM) and hasattr(obj, "support_vectors_"):
            _check_libsvm(obj)
        if hasattr(obj, "cluster_centers_") and hasattr(obj, "n_features_in_"):
            centers = obj.cluster_centers_
            if not isinstance(centers, np.ndarray) or centers.ndim != 2 or \
                    centers.shape[1] != _as_int(obj.n_features_in_, "n_features_in_"):
                raise _bad("cluster centres do not match the number of features")
        if isinstance(obj, BaseEstimator) or hasattr(obj, "__dict__"):
            try:
                attrs = vars(obj)
            except TypeError:
                continue
            stack.extend((v, child_nf, child_hgb) for v in attrs.values())
    for est in deferred:
        _check_gb_init(est)


def _as_int(v: Any, what: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise _bad(f"{what} is not an integer")
    return int(v)


def _check_tree(tree: Any, nf: int | None) -> None:
    n_features = int(tree.n_features)
    if nf is not None and n_features != nf:
        raise _bad(f"a decision tree expects {n_features} features, its estimator {nf}")
    state = tree.__getstate__()
    nodes = state["nodes"]
    n = int(tree.node_count)
    if n < 1 or n != nodes.shape[0] or n != int(tree.capacity):
        raise _bad(f"decision tree node_count {n} does not match its {nodes.shape[0]} nodes")
    left = nodes["left_child"].astype(np.int64)
    right = nodes["right_child"].astype(np.int64)
    feat = nodes["feature"].astype(np.int64)
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise _bad("decision tree node has exactly one child")
    idx = np.arange(n)
    internal = ~leaf
    li, ri, fi, ii = left[internal], right[internal], feat[internal], idx[internal]
    if np.any(li <= ii) or np.any(ri <= ii) or np.any(li >= n) or np.any(ri >= n):
        raise _bad("decision tree child index out of range")
    if np.any(fi < 0) or np.any(fi >= n_features):
        raise _bad("decision tree split feature out of range")
    depth = _tree_depths(n, ii, li, ri, "decision tree")
    if int(depth.max()) > int(tree.max_depth):
        # decision_path() sizes its output buffer by max_depth and writes without checks
        raise _bad("decision tree is deeper than its recorded max_depth")


def _tree_depths(n: int, ii: np.ndarray, li: np.ndarray, ri: np.ndarray, what: str) -> np.ndarray:
    """Depth of every node, after checking the nodes form one tree rooted at node 0 (every
    other node is the child of exactly one internal node). Vectorised pointer doubling."""
    children = np.concatenate([li, ri])
    if children.size != n - 1 or not np.array_equal(np.sort(children), np.arange(1, n)):
        raise _bad(f"{what} nodes do not form a single tree")
    anc = np.zeros(n, dtype=np.int64)
    anc[li], anc[ri] = ii, ii
    dist = np.ones(n, dtype=np.int64)
    dist[0] = 0
    while np.any(anc != 0):  # children come after parents: at most log2(depth) + 1 rounds
        dist += dist[anc]
        anc = anc[anc]
    return dist


def _hgb_context(est: Any) -> dict:
    n_features = _as_int(getattr(est, "n_features_in_", -1), "n_features_in_")
    is_cat = None
    bm = getattr(est, "_bin_mapper", None)
    if bm is not None and getattr(bm, "is_categorical_", None) is not None:
        is_cat = np.asarray(bm.is_categorical_)
        if is_cat.ndim != 1 or is_cat.shape[0] != n_features:
            raise _bad("histogram gradient boosting categorical mask has the wrong length")
        thresholds = getattr(bm, "bin_thresholds_", None)
        if thresholds is None or len(thresholds) != n_features:
            raise _bad("histogram gradient boosting bin thresholds have the wrong length")
        for f in np.flatnonzero(is_cat):
            cats = np.asarray(thresholds[f], dtype=float)
            if cats.size and (np.any(cats < 0) or np.any(cats > 255)
                              or np.any(cats != np.floor(cats))):
                raise _bad("histogram gradient boosting category out of range")
    return {"n_features": n_features, "is_categorical": is_cat}


def _check_predictor(pred: Any, ctx: dict | None) -> None:
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    if ctx is None:
        raise _bad("a histogram-gradient-boosting predictor outside its estimator")
    nodes = pred.nodes
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE \
            or nodes.ndim != 1 or nodes.shape[0] < 1:
        raise _bad("histogram-gradient-boosting predictor nodes have the wrong layout")
    n = nodes.shape[0]
    internal = nodes["is_leaf"] == 0
    ii = np.flatnonzero(internal)
    li = nodes["left"][internal].astype(np.int64)
    ri = nodes["right"][internal].astype(np.int64)
    fi = nodes["feature_idx"][internal].astype(np.int64)
    if np.any(li <= ii) or np.any(ri <= ii) or np.any(li >= n) or np.any(ri >= n):
        raise _bad("histogram-gradient-boosting child index out of range")
    if np.any(fi < 0) or np.any(fi >= ctx["n_features"]):
        raise _bad("histogram-gradient-boosting split feature out of range")
    _tree_depths(n, ii, li, ri, "histogram-gradient-boosting")
    cat = internal & (nodes["is_categorical"] != 0)
    if np.any(cat):
        bitsets = np.asarray(pred.raw_left_cat_bitsets)
        if bitsets.ndim != 2 or bitsets.shape[1] != 8:
            raise _bad("histogram-gradient-boosting category bitsets have the wrong shape")
        b = nodes["bitset_idx"][cat].astype(np.int64)
        if np.any(b < 0) or np.any(b >= bitsets.shape[0]):
            raise _bad("histogram-gradient-boosting bitset index out of range")
        is_cat = ctx["is_categorical"]
        if is_cat is None or not np.all(is_cat[nodes["feature_idx"][cat].astype(np.int64)]):
            raise _bad("histogram-gradient-boosting categorical split on a non-categorical "
                       "feature")


def _check_gb(est: Any) -> None:
    stages = est.estimators_
    if not isinstance(stages, np.ndarray) or stages.ndim != 2:
        raise _bad("gradient boosting stages are not a 2-d array")
    k = getattr(est, "n_trees_per_iteration_", None)
    if k is not None and stages.shape[1] != _as_int(k, "n_trees_per_iteration_"):
        raise _bad("gradient boosting has a stage width different from its trees per iteration")
    for sub in stages.ravel():
        if not hasattr(sub, "tree_"):
            raise _bad("gradient boosting stage is not a fitted tree")


def _check_gb_init(est: Any) -> None:
    """predict_stages() adds stage k into column k of the initial raw predictions without
    bounds checks: their width (which the ``init_`` model decides) must match the stages."""
    n_features = _as_int(getattr(est, "n_features_in_", None), "n_features_in_")
    try:
        raw = est._raw_predict_init(np.zeros((1, n_features), dtype=np.float32))
    except Exception as exc:
        raise _bad(f"gradient boosting initial model fails ({type(exc).__name__})") from None
    if raw.ndim != 2 or raw.shape[1] != est.estimators_.shape[1]:
        raise _bad("gradient boosting initial predictions do not match its stages")


def _check_bagging(est: Any) -> None:
    n_features = getattr(est, "n_features_in_", None)
    feats = getattr(est, "estimators_features_", None)
    if feats is None or n_features is None:
        return
    n_features = _as_int(n_features, "n_features_in_")
    if len(feats) != len(est.estimators_):
        raise _bad("bagging has a feature subset count different from its estimator count")
    for sub, f in zip(est.estimators_, feats):
        f = np.asarray(f)
        if f.size and (f.dtype.kind not in "iu" or f.min() < 0 or f.max() >= n_features):
            raise _bad("bagging feature subset index out of range")
        sub_nf = getattr(sub, "n_features_in_", None)
        if sub_nf is not None and _as_int(sub_nf, "n_features_in_") != f.size:
            raise _bad("bagging sub-estimator expects a different number of features")


def _check_binary_tree(tree: Any) -> None:
    from sklearn.metrics._dist_metrics import (ChebyshevDistance64, EuclideanDistance64,
                                               ManhattanDistance64, MinkowskiDistance64)
    from sklearn.neighbors._kd_tree import KDTree

    (data, idx_array, node_data, node_bounds, leaf_size, n_levels, n_nodes, *_rest,
     metric, sample_weight) = tree.__getstate__()
    data, idx_array, node_data, node_bounds = (np.asarray(a) for a in
                                               (data, idx_array, node_data, node_bounds))
    if data.ndim != 2 or data.shape[0] < 1:
        raise _bad("neighbours tree data is not a non-empty 2-d array")
    n, d = data.shape
    if idx_array.shape != (n,) or idx_array.dtype.kind not in "iu" or \
            np.any(idx_array < 0) or np.any(idx_array >= n):
        raise _bad("neighbours tree index array out of range")
    if n_nodes < 1 or node_data.shape != (n_nodes,) or n_nodes != 2 ** n_levels - 1 \
            or leaf_size < 1:
        raise _bad("neighbours tree node count is inconsistent")
    if node_bounds.ndim != 3 or node_bounds.shape[1:] != (n_nodes, d) or \
            node_bounds.shape[0] != (2 if isinstance(tree, KDTree) else 1):
        raise _bad("neighbours tree node bounds have the wrong shape")
    start, end, is_leaf = (node_data[f].astype(np.int64) for f in
                           ("idx_start", "idx_end", "is_leaf"))
    if np.any(start < 0) or np.any(end > n) or np.any(start > end):
        raise _bad("neighbours tree node range out of bounds")
    internal = np.flatnonzero(is_leaf == 0)
    if np.any(2 * internal + 2 >= n_nodes):
        raise _bad("neighbours tree internal node without children")
    if not isinstance(metric, (EuclideanDistance64, ManhattanDistance64, ChebyshevDistance64,
                               MinkowskiDistance64)):
        raise _bad(f"neighbours tree uses an unsupported metric {type(metric).__name__}")
    if isinstance(metric, MinkowskiDistance64):
        vec = np.asarray(metric.__getstate__()[1])
        if vec.shape[0] not in (0, d):
            raise _bad("Minkowski weights do not match the data width")
    if sample_weight is not None and np.asarray(sample_weight).shape != (n,):
        raise _bad("neighbours tree sample weights have the wrong length")


def _check_libsvm(est: Any) -> None:
    sv = est.support_vectors_
    if not isinstance(sv, np.ndarray) or sv.ndim != 2:
        raise _bad("support vectors are not a dense 2-d array (sparse SVMs are not accepted)")
    n_sv = sv.shape[0]
    dual = np.asarray(est._dual_coef_)
    n_support = np.asarray(est._n_support)
    intercept = np.asarray(est._intercept_)
    if dual.ndim != 2 or dual.shape[1] != n_sv:
        raise _bad("SVM dual coefficients do not match the support vectors")
    if np.asarray(est.support_).shape != (n_sv,):
        raise _bad("SVM support indices do not match the support vectors")
    shape_fit = getattr(est, "shape_fit_", None)
    if shape_fit is None or len(shape_fit) < 2 or (n_sv and sv.shape[1] != shape_fit[1]):
        raise _bad("SVM support vectors do not match the fitted input width")
    if est._impl in ("c_svc", "nu_svc"):
        n_class = n_support.shape[0]
        n_pairs = n_class * (n_class - 1) // 2
        if n_support.dtype.kind not in "iu" or np.any(n_support < 0) or \
                int(n_support.sum()) != n_sv or dual.shape[0] != max(n_class - 1, 1) or \
                intercept.shape != (max(n_pairs, 1),):
            raise _bad("SVM class counts, coefficients and intercepts are inconsistent")
        for name in ("_probA", "_probB"):
            p = np.asarray(getattr(est, name, np.empty(0)))
            if p.size not in (0, n_pairs):
                raise _bad("SVM probability calibration has the wrong length")
    else:
        if dual.shape[0] != 1 or intercept.shape != (1,):
            raise _bad("SVM coefficients and intercepts are inconsistent")
