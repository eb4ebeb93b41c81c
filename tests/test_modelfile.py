"""Safe model files: round trips, refusal of code-carrying files (the payload never runs), size
guards, structural validation of index-bearing internals, and fuzzing (only UnsafeModelError)."""
from __future__ import annotations

import io
import json
import pickle
import time
import zipfile
import zlib

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import (calibration, compose, ensemble, feature_selection, linear_model,
                     naive_bayes, neighbors, neural_network, pipeline, preprocessing, svm, tree)
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import make_classification, make_regression
from sklearn.utils import all_estimators

from protocol.errors import UnsafeModelError
from tests.helpers import zip_of_deflated
from learnware_core.modelfile import ALLOWED_TYPES, dump_model, load_model

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")]

# ------------------------------------------------------------------------------------------
# Fixtures and helpers
# ------------------------------------------------------------------------------------------

XC, YC = make_classification(200, 6, n_informative=4, n_classes=3, random_state=0)
XB, YB = make_classification(150, 6, random_state=1)
XR, YR = make_regression(200, 6, noise=1.0, random_state=0)

CLASSIFIERS = {
    "logistic": lambda: linear_model.LogisticRegression(),
    "sgd": lambda: linear_model.SGDClassifier(loss="log_loss", random_state=0),
    "tree": lambda: tree.DecisionTreeClassifier(random_state=0),
    "forest": lambda: ensemble.RandomForestClassifier(8, random_state=0),
    "extra_trees": lambda: ensemble.ExtraTreesClassifier(8, random_state=0),
    "gradient_boosting": lambda: ensemble.GradientBoostingClassifier(n_estimators=8,
                                                                     random_state=0),
    "hist_gradient_boosting": lambda: ensemble.HistGradientBoostingClassifier(max_iter=8),
    "knn_kd_tree": lambda: neighbors.KNeighborsClassifier(algorithm="kd_tree"),
    "knn_ball_tree": lambda: neighbors.KNeighborsClassifier(algorithm="ball_tree",
                                                            metric="manhattan"),
    "knn_brute": lambda: neighbors.KNeighborsClassifier(algorithm="brute"),
    "svc": lambda: svm.SVC(probability=True, random_state=0),
    "linear_svc": lambda: svm.LinearSVC(),
    "mlp": lambda: neural_network.MLPClassifier(max_iter=30, random_state=0),
    "naive_bayes": lambda: naive_bayes.GaussianNB(),
    "adaboost": lambda: ensemble.AdaBoostClassifier(n_estimators=4, random_state=0),
    "bagging": lambda: ensemble.BaggingClassifier(n_estimators=3, max_features=0.5,
                                                  random_state=0),
    "calibrated": lambda: calibration.CalibratedClassifierCV(svm.LinearSVC()),
    "voting": lambda: ensemble.VotingClassifier(
        [("lr", linear_model.LogisticRegression()), ("dt", tree.DecisionTreeClassifier())],
        voting="soft"),
    "scaled_logistic": lambda: pipeline.make_pipeline(preprocessing.StandardScaler(),
                                                      linear_model.LogisticRegression()),
    "select_k_best": lambda: pipeline.make_pipeline(feature_selection.SelectKBest(k=3),
                                                    tree.DecisionTreeClassifier()),
}
REGRESSORS = {
    "linear": lambda: linear_model.LinearRegression(),
    "ridge": lambda: linear_model.Ridge(),
    "ridge_cv": lambda: linear_model.RidgeCV(),
    "lasso": lambda: linear_model.Lasso(),
    "sgd": lambda: linear_model.SGDRegressor(random_state=0),
    "tree": lambda: tree.DecisionTreeRegressor(random_state=0),
    "forest": lambda: ensemble.RandomForestRegressor(8, random_state=0),
    "gradient_boosting": lambda: ensemble.GradientBoostingRegressor(n_estimators=8,
                                                                    random_state=0),
    "hist_gradient_boosting": lambda: ensemble.HistGradientBoostingRegressor(max_iter=8),
    "knn": lambda: neighbors.KNeighborsRegressor(),
    "svr": lambda: svm.SVR(),
    "mlp": lambda: neural_network.MLPRegressor(max_iter=30, random_state=0),
    "scaled_ridge": lambda: pipeline.make_pipeline(preprocessing.StandardScaler(),
                                                   linear_model.Ridge()),
    "scaled_forest": lambda: pipeline.make_pipeline(preprocessing.StandardScaler(),
                                                    ensemble.RandomForestRegressor(5)),
}


def _assert_same_predictions(a, b, X):
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    if hasattr(a, "predict_proba"):
        np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X))


def _zip_parts(data: bytes) -> tuple[dict, dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    return json.loads(files.pop("schema.json")), files


def _rezip(schema: dict, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("schema.json", json.dumps(schema))
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def _json_node(value) -> dict:
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(value), "is_json": True}


def _tuple_node(*values) -> dict:
    return {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
            "content": [_json_node(v) for v in values]}


def _with_param(node: dict, data: bytes | None = None) -> bytes:
    """A fitted LogisticRegression's skops file whose ``C`` parameter is ``node``."""
    data = data or sio.dumps(linear_model.LogisticRegression().fit(XB, YB))
    schema, files = _zip_parts(data)
    schema["content"]["content"]["C"] = node
    return _rezip(schema, files)


def _reduce_call(module: str, name: str, *args) -> dict:
    """skops node that, if constructed, calls ``module.name(*args)``."""
    return {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode",
            "content": _tuple_node(*args)}


def _write_marker_code(marker) -> str:
    return f"open({str(marker)!r}, 'w').write('pwned')"


class MarkerOnSetstate:
    """A custom class whose unpickling writes a marker file (``path`` comes from the state)."""

    def __setstate__(self, state):
        with open(state["path"], "w") as fh:
            fh.write("pwned")


class ExecOnReduce:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


class Doubler(BaseEstimator, TransformerMixin):
    """A perfectly innocent custom transformer: still not on the allow-list."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X) * 2


def _find_tree_arrays(data: bytes, field: str = "nodes") -> list[str]:
    """Names of the .npy entries holding decision-tree node arrays."""
    out = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            if name.endswith(".npy"):
                arr = np.load(io.BytesIO(zf.read(name)), allow_pickle=False)
                if arr.dtype.names and field in arr.dtype.names:
                    out.append(name)
    return out


def _mutate_struct_array(data: bytes, names: tuple[str, ...], field: str, fn) -> bytes:
    schema, files = _zip_parts(data)
    changed = False
    for name, content in files.items():
        if not name.endswith(".npy"):
            continue
        arr = np.load(io.BytesIO(content), allow_pickle=False)
        if arr.dtype.names and set(names) <= set(arr.dtype.names):
            arr = arr.copy()
            fn(arr[field])
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            files[name] = buf.getvalue()
            changed = True
            break
    assert changed, "no array with those fields"
    return _rezip(schema, files)


# ------------------------------------------------------------------------------------------
# Round trips and the allow-list
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_round_trip(name):
    model = CLASSIFIERS[name]().fit(XC, YC)
    data = dump_model(model)
    loaded = load_model(data)
    assert type(loaded) is type(model)
    _assert_same_predictions(model, loaded, XC)


@pytest.mark.parametrize("name", sorted(REGRESSORS))
def test_regressor_round_trip(name):
    model = REGRESSORS[name]().fit(XR, YR)
    loaded = load_model(dump_model(model))
    _assert_same_predictions(model, loaded, XR)


@pytest.mark.parametrize("factory", [
    lambda: svm.SVC(probability=True, random_state=0),
    lambda: ensemble.GradientBoostingClassifier(n_estimators=5, random_state=0),
    lambda: ensemble.HistGradientBoostingClassifier(max_iter=5),
])
def test_binary_classifier_round_trip(factory):
    model = factory().fit(XB, YB)
    _assert_same_predictions(model, load_model(dump_model(model)), XB)


def test_categorical_and_column_transformer_round_trip():
    rng = np.random.RandomState(0)
    Xcat = np.c_[rng.randint(0, 5, len(XC)), XC[:, :3]]
    hgb = ensemble.HistGradientBoostingClassifier(max_iter=5, categorical_features=[0])
    hgb.fit(Xcat, YC)
    _assert_same_predictions(hgb, load_model(dump_model(hgb)), Xcat)

    df = pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], len(XC)),
                       "a": XC[:, 0], "b": XC[:, 1]})
    model = pipeline.make_pipeline(
        compose.make_column_transformer(
            (preprocessing.OneHotEncoder(handle_unknown="ignore"), ["colour"]),
            remainder="passthrough"),
        ensemble.RandomForestClassifier(5, random_state=0)).fit(df, YC)
    _assert_same_predictions(model, load_model(dump_model(model)), df)


def test_allow_list_covers_every_public_estimator_and_what_skops_reports():
    for _, cls in all_estimators():
        if cls.__module__.startswith("sklearn."):
            assert f"{cls.__module__}.{cls.__name__}" in ALLOWED_TYPES
    for factory in list(CLASSIFIERS.values()):
        data = sio.dumps(factory().fit(XC, YC))
        assert set(sio.get_untrusted_types(data=data)) <= ALLOWED_TYPES
    assert "builtins.exec" not in ALLOWED_TYPES and "os.system" not in ALLOWED_TYPES


def test_dump_refuses_non_allow_listed_types_naming_them():
    model = pipeline.make_pipeline(Doubler(), linear_model.Ridge()).fit(XR, YR)
    with pytest.raises(UnsafeModelError) as err:
        dump_model(model)
    name = f"{Doubler.__module__}.Doubler"
    assert name in str(err.value)
    assert err.value.details["untrusted_types"] == [name]

    with pytest.raises(UnsafeModelError, match="numpy.mean"):
        dump_model(preprocessing.FunctionTransformer(np.mean).fit(XR))
    with pytest.raises(UnsafeModelError, match="scikit-learn estimator"):
        dump_model({"not": "a model"})


def test_ufunc_function_transformer_is_allowed():
    model = pipeline.make_pipeline(preprocessing.FunctionTransformer(np.log1p),
                                   linear_model.Ridge()).fit(np.abs(XR), YR)
    _assert_same_predictions(model, load_model(dump_model(model)), np.abs(XR))


# ------------------------------------------------------------------------------------------
# Code-carrying files are refused and their payload never runs
# ------------------------------------------------------------------------------------------

def test_exec_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "exec-ran"
    data = _with_param(_reduce_call("builtins", "exec", _write_marker_code(marker)))
    with pytest.raises(UnsafeModelError) as err:
        load_model(data)
    assert "builtins.exec" in str(err.value)
    assert "builtins.exec" in err.value.details["untrusted_types"]
    assert not marker.exists()
    # Control: the payload is live -- a loader that trusted it would have run it.
    sio.loads(data, trusted=["builtins.exec"])
    assert marker.exists()


def test_os_system_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "system-ran"
    data = _with_param(_reduce_call("os", "system", f"touch {marker}"))
    with pytest.raises(UnsafeModelError, match="os.system"):
        load_model(data)
    assert not marker.exists()
    # A bare reference to os.system (FunctionNode) is refused too.
    ref = _with_param({"__class__": "system", "__module__": "os", "__loader__": "FunctionNode"})
    with pytest.raises(UnsafeModelError, match="os.system"):
        load_model(ref)


def test_custom_class_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "setstate-ran"
    cls = f"{MarkerOnSetstate.__module__}.MarkerOnSetstate"
    node = {"__class__": "MarkerOnSetstate", "__module__": MarkerOnSetstate.__module__,
            "__loader__": "ObjectNode",
            "content": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode",
                        "content": {"path": _json_node(str(marker))},
                        "key_types": {"__class__": "list", "__module__": "builtins",
                                      "__loader__": "ListNode",
                                      "content": [{"__class__": "str", "__module__": "builtins",
                                                   "__loader__": "TypeNode"}]}}}
    data = _with_param(node)
    with pytest.raises(UnsafeModelError) as err:
        load_model(data)
    assert cls in str(err.value)
    assert not marker.exists()
    sio.loads(data, trusted=[cls])  # control: the payload is live
    assert marker.exists()


def test_every_untrusted_type_is_named(tmp_path):
    data = _with_param({"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                        "content": [_reduce_call("os", "system", "true"),
                                    _reduce_call("builtins", "eval", "1"),
                                    {"__class__": "getattr", "__module__": "builtins",
                                     "__loader__": "FunctionNode"}]})
    with pytest.raises(UnsafeModelError) as err:
        load_model(data)
    for name in ("os.system", "builtins.eval", "builtins.getattr"):
        assert name in str(err.value)
        assert name in err.value.details["untrusted_types"]


def test_allowed_names_under_calling_loaders_are_refused():
    # A function name is allow-listed for FunctionNode only: NdArrayNode/LossNode/TreeNode
    # would *call* it.
    fn = "sklearn.feature_selection._univariate_selection.f_classif"
    assert fn in ALLOWED_TYPES
    for loader in ("LossNode", "TreeNode", "NdArrayNode", "ObjectNode"):
        node = {"__class__": "f_classif",
                "__module__": "sklearn.feature_selection._univariate_selection",
                "__loader__": loader, "__reduce__": {"args": _tuple_node(1)},
                "content": _json_node(None)}
        with pytest.raises(UnsafeModelError, match=f"{fn} \\(as {loader}\\)"):
            load_model(_with_param(node))
    # Method references and operator functions are not accepted at all.
    node = {"__class__": "LogisticRegression",
            "__module__": "sklearn.linear_model._logistic", "__loader__": "MethodNode",
            "content": {"func": "fit", "obj": _json_node(1)}}
    with pytest.raises(UnsafeModelError, match="as MethodNode"):
        load_model(_with_param(node))


def test_random_generator_name_is_checked():
    model = ensemble.RandomForestClassifier(3, random_state=np.random.default_rng(0))
    data = sio.dumps(model)  # unfitted: random_state holds a Generator
    assert isinstance(load_model(data), ensemble.RandomForestClassifier)
    schema, files = _zip_parts(data)
    gen = schema["content"]["content"]["random_state"]
    gen["content"]["bit_generator"]["content"]["bit_generator"]["content"] = json.dumps("seed")
    with pytest.raises(UnsafeModelError, match="numpy.random.seed"):
        load_model(_rezip(schema, files))


def test_old_protocols_are_refused():
    schema, files = _zip_parts(dump_model(linear_model.Ridge().fit(XR, YR)))
    for protocol in (0, 1, True, "2", None):
        schema["protocol"] = protocol
        with pytest.raises(UnsafeModelError, match="protocol"):
            load_model(_rezip(schema, files))


def test_raw_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pickle-ran"
    for proto in (0, 2, pickle.HIGHEST_PROTOCOL):
        data = pickle.dumps(ExecOnReduce(_write_marker_code(marker)), protocol=proto)
        with pytest.raises(UnsafeModelError, match="not a zip"):
            load_model(data)
    # A pickle inside a zip is no better.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.pkl", pickle.dumps(ExecOnReduce(_write_marker_code(marker))))
    with pytest.raises(UnsafeModelError, match="schema.json"):
        load_model(buf.getvalue())
    assert not marker.exists()
    pickle.loads(data)  # control: the payload is live
    assert marker.exists()


def test_pickled_object_array_inside_skops_file_is_refused(tmp_path):
    marker = tmp_path / "npy-ran"
    data = dump_model(linear_model.LogisticRegression().fit(XB, YB))
    schema, files = _zip_parts(data)
    name = next(n for n in files if n.endswith(".npy"))
    payload = np.empty(1, dtype=object)
    payload[0] = ExecOnReduce(_write_marker_code(marker))
    buf = io.BytesIO()
    np.save(buf, payload, allow_pickle=True)
    files[name] = buf.getvalue()
    with pytest.raises(UnsafeModelError, match="object dtype"):
        load_model(_rezip(schema, files))
    assert not marker.exists()


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, b"PK\x03\x04" + b"\x00" * 60,
                                  b"hello world", "a string", None, 42])
def test_garbage_is_refused(data):
    with pytest.raises(UnsafeModelError):
        load_model(data)


# ------------------------------------------------------------------------------------------
# Size guards
# ------------------------------------------------------------------------------------------

def test_zip_bomb_is_refused_before_decompression():
    block = bytes(64 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = comp.compress(block) + comp.flush()
    schema = json.dumps({"protocol": 2}).encode()
    c2 = zlib.compressobj(9, zlib.DEFLATED, -15)
    schema_entry = ("schema.json", c2.compress(schema) + c2.flush(), zlib.crc32(schema),
                    len(schema))
    entries = [schema_entry] + [(f"{i}.npy", stream, zlib.crc32(block), len(block))
                                for i in range(17)]  # 1.06 GiB declared, 1 MiB on the wire
    data = zip_of_deflated(entries)
    assert len(data) < 2 << 20
    with pytest.raises(UnsafeModelError, match="zip bomb"):
        load_model(data)
    # An honest small bomb under a tighter limit.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("schema.json", schema)
        zf.writestr("big.npy", bytes(8 << 20))
    with pytest.raises(UnsafeModelError, match="decompress"):
        load_model(buf.getvalue(), max_uncompressed_bytes=4 << 20)


def test_entry_lying_about_its_size_is_never_inflated_past_it():
    """zipfile.read() would inflate the whole 1 GiB stream before truncating it to the 100
    bytes the entry declares; entries are read in bounded chunks instead."""
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    segment = comp.compress(bytes(64 << 20)) + comp.flush(zlib.Z_FULL_FLUSH)
    stream = segment * 16 + comp.flush()  # a valid deflate stream of 1 GiB of zeros
    model = dump_model(linear_model.Ridge().fit(XR, YR))
    schema, files = _zip_parts(model)
    raw_schema = json.dumps(schema).encode()
    c2 = zlib.compressobj(9, zlib.DEFLATED, -15)
    entries = [("schema.json", c2.compress(raw_schema) + c2.flush(), zlib.crc32(raw_schema),
                len(raw_schema))]
    name = next(n for n in files if n.endswith(".npy"))
    entries.append((name, stream, zlib.crc32(bytes(100)), 100))
    data = zip_of_deflated(entries)
    t0 = time.perf_counter()
    with pytest.raises(UnsafeModelError):
        load_model(data)
    assert time.perf_counter() - t0 < 1.0


def test_entry_count_and_raw_size_limits():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("schema.json", "{}")
        for i in range(50):
            zf.writestr(f"{i}.bin", b"")
    with pytest.raises(UnsafeModelError, match="entries"):
        load_model(buf.getvalue(), max_entries=20)
    data = dump_model(linear_model.Ridge().fit(XR, YR))
    with pytest.raises(UnsafeModelError, match="limit"):
        load_model(data, max_bytes=len(data) - 1)
    assert isinstance(load_model(data, max_bytes=len(data)), linear_model.Ridge)


def test_lying_npy_header_is_refused():
    data = dump_model(linear_model.LogisticRegression().fit(XB, YB))
    schema, files = _zip_parts(data)
    name = next(n for n in files if n.endswith(".npy"))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (10 ** 12,)})
    files[name] = header.getvalue() + b"\x00" * 64
    with pytest.raises(UnsafeModelError, match="declares shape"):
        load_model(_rezip(schema, files))


def test_deep_nesting_is_refused():
    node = _json_node(1.0)
    for _ in range(150):  # ~300 JSON levels
        node = {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode",
                "content": [node]}
    with pytest.raises(UnsafeModelError, match="nested"):
        load_model(_with_param(node))


# ------------------------------------------------------------------------------------------
# Allow-listed types with crafted internals are refused instead of crashing at predict time
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,match", [
    ("feature", 10 ** 6, "split feature out of range"),
    ("left_child", 10 ** 6, "child index out of range"),
    ("left_child", 0, "child index out of range"),  # a cycle back to the root
    ("right_child", -1, "exactly one child"),
])
def test_crafted_decision_tree_is_refused(field, value, match):
    model = ensemble.RandomForestClassifier(3, random_state=0).fit(XC, YC)
    data = dump_model(model)

    def mutate(col):
        col[0] = value

    bad = _mutate_struct_array(data, ("left_child", "feature"), field, mutate)
    with pytest.raises(UnsafeModelError, match=match):
        load_model(bad)


def test_tree_deeper_than_its_recorded_max_depth_is_refused():
    """decision_path() sizes its buffer by max_depth: a lie there would write out of bounds."""
    model = tree.DecisionTreeClassifier(random_state=0).fit(XC, YC)
    schema, files = _zip_parts(dump_model(model))
    tree_state = schema["content"]["content"]["tree_"]
    assert tree_state["__loader__"] == "TreeNode"
    tree_state["content"]["content"]["max_depth"] = _json_node(1)
    with pytest.raises(UnsafeModelError, match="deeper than its recorded max_depth"):
        load_model(_rezip(schema, files))


def test_tree_with_shared_children_is_refused():
    model = tree.DecisionTreeRegressor(max_depth=3, random_state=0).fit(XR, YR)
    data = dump_model(model)

    def share(col):  # depth-first numbering: node 1 is the root's left child
        assert col[1] > 1
        col[0] = col[1]  # the root's right child is now also node 1's right child

    bad = _mutate_struct_array(data, ("left_child", "feature"), "right_child", share)
    with pytest.raises(UnsafeModelError, match="single tree"):
        load_model(bad)


def test_crafted_hist_gradient_boosting_is_refused():
    data = dump_model(ensemble.HistGradientBoostingRegressor(max_iter=3).fit(XR, YR))
    for field, value, match in [("feature_idx", 10 ** 5, "split feature"),
                                ("left", 10 ** 6, "child index")]:
        def mutate(col, value=value):
            col[0] = value
        bad = _mutate_struct_array(data, ("feature_idx", "bitset_idx"), field, mutate)
        with pytest.raises(UnsafeModelError, match=match):
            load_model(bad)


def test_crafted_kd_tree_is_refused():
    data = dump_model(neighbors.KNeighborsClassifier(algorithm="kd_tree").fit(XC, YC))
    bad = _mutate_struct_array(data, ("idx_start", "idx_end"), "idx_end",
                               lambda col: col.__setitem__(0, 10 ** 6))
    with pytest.raises(UnsafeModelError, match="node range"):
        load_model(bad)


def _tampered(model, **attrs) -> bytes:
    """A skops file of ``model`` with attributes overwritten (written by skops directly, as an
    attacker would, bypassing dump_model's own checks)."""
    for name, value in attrs.items():
        setattr(model, name, value)
    return sio.dumps(model)


def test_gradient_boosting_init_must_match_its_stages():
    """predict_stages() writes stage k into column k of the init model's output unchecked."""
    model = ensemble.GradientBoostingClassifier(n_estimators=3, random_state=0).fit(XC, YC)
    from sklearn.dummy import DummyClassifier
    narrow = DummyClassifier().fit(XC, YC > 0)  # 1 column of raw predictions, not 3
    with pytest.raises(UnsafeModelError, match="initial predictions do not match"):
        load_model(_tampered(model, init_=narrow))
    with pytest.raises(UnsafeModelError, match="initial predictions do not match"):
        dump_model(model)


def test_cluster_centres_must_match_the_features():
    from sklearn.cluster import KMeans
    model = KMeans(3, n_init=1, random_state=0).fit(XC)
    assert isinstance(load_model(dump_model(model)), KMeans)
    with pytest.raises(UnsafeModelError, match="cluster centres"):
        load_model(_tampered(model, cluster_centers_=model.cluster_centers_[:, :2].copy()))


def test_crafted_svm_is_refused():
    model = svm.SVC().fit(XC, YC)
    schema, files = _zip_parts(dump_model(model))
    # Find _n_support's array by value and inflate one class count.
    for name, content in files.items():
        arr = np.load(io.BytesIO(content), allow_pickle=False) if name.endswith(".npy") else None
        if arr is not None and np.array_equal(arr, model._n_support):
            arr = arr.copy()
            arr[0] += 1000
            buf = io.BytesIO()
            np.save(buf, arr)
            files[name] = buf.getvalue()
            break
    else:
        pytest.fail("n_support array not found")
    with pytest.raises(UnsafeModelError, match="SVM|altered"):
        load_model(_rezip(schema, files))


# ------------------------------------------------------------------------------------------
# Fuzzing: whatever the bytes, only UnsafeModelError (or a valid, usable model)
# ------------------------------------------------------------------------------------------

_FUZZ_BASES = {
    "forest": (dump_model(ensemble.RandomForestClassifier(2, max_depth=3, random_state=0)
                          .fit(XC, YC)), XC),
    "hgb": (dump_model(ensemble.HistGradientBoostingRegressor(max_iter=2).fit(XR, YR)), XR),
    "knn": (dump_model(neighbors.KNeighborsClassifier(algorithm="kd_tree").fit(XC, YC)), XC),
    "svc": (dump_model(svm.SVC().fit(XC, YC)), XC),
    "pipe": (dump_model(pipeline.make_pipeline(preprocessing.StandardScaler(),
                                               linear_model.LogisticRegression()).fit(XB, YB)),
             XB),
}
_FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _load_and_use(data, X):
    """load_model must raise only UnsafeModelError; a model it returns must not crash."""
    try:
        model = load_model(data)
    except UnsafeModelError:
        return
    try:
        model.predict(X[:5])
    except Exception:  # ordinary Python errors from odd-but-safe parameters are fine
        pass


@_FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(data):
    with pytest.raises(UnsafeModelError):
        load_model(data)


@_FUZZ
@given(st.sampled_from(sorted(_FUZZ_BASES)), st.data())
def test_fuzz_mutated_file_bytes(base, draw):
    data, X = _FUZZ_BASES[base]
    buf = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 8))):
        kind = draw.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        pos = draw.draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip" and buf:
            buf[pos] ^= draw.draw(st.integers(1, 255))
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = draw.draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del buf[pos:pos + draw.draw(st.integers(1, 16))]
    _load_and_use(bytes(buf), X)


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 40, 2 ** 40),
                       st.floats(allow_nan=False), st.text(max_size=12))
_json = st.recursive(_json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@_FUZZ
@given(st.sampled_from(sorted(_FUZZ_BASES)), st.data())
def test_fuzz_mutated_schema(base, draw):
    """Well-formed zips (valid CRCs) whose schema.json has random subtrees replaced."""
    data, X = _FUZZ_BASES[base]
    schema, files = _zip_parts(data)
    paths = [p for p in _paths(schema) if p]
    for _ in range(draw.draw(st.integers(1, 3))):
        path = draw.draw(st.sampled_from(paths))
        parent = schema
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = draw.draw(_json)
        except (KeyError, IndexError, TypeError):
            continue
    _load_and_use(_rezip(schema, files), X)


@_FUZZ
@given(st.sampled_from(sorted(_FUZZ_BASES)), st.data())
def test_fuzz_mutated_arrays(base, draw):
    """Well-formed zips whose .npy payloads (tree nodes, indices, coefficients) are corrupted:
    the structural checks must catch what native code would index without bounds checks."""
    data, X = _FUZZ_BASES[base]
    schema, files = _zip_parts(data)
    names = sorted(n for n in files if n.endswith(".npy"))
    name = draw.draw(st.sampled_from(names))
    arr = np.load(io.BytesIO(files[name]), allow_pickle=False).copy()
    raw = bytearray(arr.tobytes())
    if raw:
        for _ in range(draw.draw(st.integers(1, 6))):
            pos = draw.draw(st.integers(0, len(raw) - 1))
            raw[pos] = draw.draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01, 0x10]))
        arr = np.frombuffer(bytes(raw), dtype=arr.dtype).reshape(arr.shape)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    files[name] = buf.getvalue()
    _load_and_use(_rezip(schema, files), X)
