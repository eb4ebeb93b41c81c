"""Helpers of the workbench's tests: a txhousing market (one learnware per city) and a
workbench app with a logged-in Flask test client."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

PORT = 48765  # the port the in-process workbench believes it is served on (Host check)
BASE = f"http://127.0.0.1:{PORT}"
ORIGIN = {"Origin": BASE}
DEV_CITIES = ["Austin", "Dallas", "Houston"]
USER_CITY = "San Antonio"


def txhousing():
    from client_sdk.demo.datasets import load_txhousing
    return load_txhousing()


def city_frame(island, city: str):
    g = island[city]
    df = g.X.copy()
    df[island.target_name] = g.y
    return df


def fitted_model(island, city: str):
    from sklearn.linear_model import Ridge
    g = island[city]
    return Ridge(alpha=1.0).fit(g.X.to_numpy(), g.y)


def publish_cities(make_client, island, cities) -> dict[str, str]:
    from client_sdk.demo.datasets import semantic_for
    out = {}
    for city in cities:
        sem = semantic_for(island, name=f"{city} home sales", description=f"Ridge on {city}")
        out[city] = make_client().publish(fitted_model(island, city), island[city].X, sem)
    return out


def write_skops(model, path: Path) -> Path:
    from learnware_core.modelfile import dump_model
    path.write_bytes(dump_model(model))
    return path


def login(client, token: str) -> None:
    resp = client.get(f"/?token={token}")
    assert resp.status_code == 303 and resp.headers["Location"] == "/"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def post(client, path: str, data: dict, csrf: str, **kw):
    return client.post(path, data={**data, "csrf": csrf}, headers=ORIGIN, **kw)


def follow_job(client, resp, timeout_s: float = 120.0):
    """Follow a job's redirect until it is done; the final answer (its page or where it
    leads)."""
    assert resp.status_code == 303, resp.get_data(as_text=True)[:500]
    loc = resp.headers["Location"]
    assert loc.startswith("/jobs/")
    end = time.monotonic() + timeout_s
    while True:
        r = client.get(loc)
        if r.status_code == 303:
            return client.get(r.headers["Location"])
        html = r.get_data(as_text=True)
        if 'id="error-what"' in html or time.monotonic() > end:
            return r
        time.sleep(0.05)


def values_of(df) -> np.ndarray:
    return df.to_numpy(dtype=float).ravel()


def workbench_client(app):
    """A Flask test client whose requests go to http://127.0.0.1:PORT (the Host check)."""
    from flask.testing import FlaskClient

    class Client(FlaskClient):
        def open(self, *args, **kw):
            kw.setdefault("base_url", BASE)
            return super().open(*args, **kw)

    app.test_client_class = Client
    return app.test_client()
