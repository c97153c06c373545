"""ab-router in Python: the logic of guests/ab-router (Rust) and guests/js/ab-router for the
Python row of `cargo xtask bench envoy`. Every user lands in a stable bucket,
fnv1a64(salt || 0 || user id) mod 10000, and the bucket's place in the cumulative split picks the
version written to `x-backend-version` (configurable); the choice is counted in
`ab_requests{version}`.

    {"header": "x-user-id", "target": "x-backend-version", "salt": "exp-42",
     "split": [{"version": "v1", "percent": 90}, {"version": "v2", "percent": 10}],
     "default": "v1"}

The `http-stream` resource is the class `HttpStream` in `filter.py`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config
from wit_world.imports.types import Error_InvalidConfig

BUCKETS = 10000
MASK = (1 << 64) - 1
KNOWN = {"header", "target", "salt", "split", "default"}

# Set by `init`; read by filter.py.
header = "x-user-id"
target = "x-backend-version"
salt = b""
bounds: list[tuple[int, str]] = []
fallback = "v1"


def invalid(message: str) -> Err:
    return Err(Error_InvalidConfig(f"ab-router: {message}"))


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def choose(user: str | None) -> str:
    if not user:
        return fallback
    b = fnv1a64(salt + b"\0" + user.encode()) % BUCKETS
    for bound, version in bounds:
        if b < bound:
            return version
    return fallback


class Lifecycle(exports.Lifecycle):
    def init(self) -> None:
        global header, target, salt, bounds, fallback
        cfg = json.loads(config.get_json() or "{}")
        unknown = sorted(set(cfg) - KNOWN)
        if unknown:
            raise invalid(f"unknown key(s) {', '.join(unknown)}")
        split = cfg.get("split", [{"version": "v1", "percent": 50}, {"version": "v2", "percent": 50}])
        if not isinstance(split, list) or not split:
            raise invalid("split: at least one version is needed")
        total = 0.0
        new_bounds = []
        for arm in split:
            percent = arm.get("percent")
            if not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
                raise invalid(f"split: {arm.get('version')}: percent must be within 0..=100")
            total += percent
            new_bounds.append((round(total * 100), str(arm["version"])))
        if abs(total - 100) > 1e-6:
            raise invalid(f"split: the percentages add up to {total}, not 100")
        header = cfg.get("header", "x-user-id")
        target = cfg.get("target", "x-backend-version")
        salt = cfg.get("salt", "").encode()
        bounds = new_bounds
        fallback = cfg.get("default", str(split[0]["version"]))


class Filter(exports.Filter):
    def on_tick(self) -> None:
        pass

    def on_http_call_response(self, token: int, status: int, body: bytes) -> None:
        pass
