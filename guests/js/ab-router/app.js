// ab-router in JavaScript: the logic of guests/ab-router (Rust) for the JavaScript row of
// `cargo xtask bench envoy`. Every user lands in a stable bucket,
// fnv1a64(salt ‖ 0 ‖ user id) mod 10000, and the bucket's place in the cumulative split picks
// the version written to `x-backend-version` (configurable), as the Rust plugin does; the
// choice is counted in `ab_requests{version}`.
//
// {"header": "x-user-id", "target": "x-backend-version", "salt": "exp-42",
//  "split": [{"version": "v1", "percent": 90}, {"version": "v2", "percent": 10}],
//  "default": "v1"}

import { getJson } from 'weft:plugin/config@0.2.0';
import { getHeader, setHeader } from 'weft:plugin/http@0.2.0';
import { counterAdd } from 'weft:plugin/metrics@0.2.0';

const BUCKETS = 10000n;
const MASK = (1n << 64n) - 1n;
const encoder = new TextEncoder();

let settings = null;
let bounds = [];
let fallback = 'v1';

function invalid(message) {
  return { tag: 'invalid-config', val: `ab-router: ${message}` };
}

function fnv1a64(bytes) {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & MASK;
  }
  return h;
}

function bucket(salt, user) {
  const s = encoder.encode(salt);
  const u = encoder.encode(user);
  const all = new Uint8Array(s.length + 1 + u.length);
  all.set(s, 0);
  all.set(u, s.length + 1);
  return fnv1a64(all) % BUCKETS;
}

export const lifecycle = {
  init() {
    const cfg = { header: 'x-user-id', target: 'x-backend-version', salt: '', ...JSON.parse(getJson() || '{}') };
    cfg.split ??= [{ version: 'v1', percent: 50 }, { version: 'v2', percent: 50 }];
    const known = new Set(['header', 'target', 'salt', 'split', 'default']);
    const unknown = Object.keys(cfg).filter((k) => !known.has(k));
    if (unknown.length > 0) {
      throw invalid(`unknown key(s) ${unknown.join(', ')}`);
    }
    if (!Array.isArray(cfg.split) || cfg.split.length === 0) {
      throw invalid('split: at least one version is needed');
    }
    let total = 0;
    bounds = [];
    for (const arm of cfg.split) {
      if (typeof arm.percent !== 'number' || arm.percent < 0 || arm.percent > 100) {
        throw invalid(`split: ${arm.version}: percent must be within 0..=100`);
      }
      total += arm.percent;
      bounds.push([BigInt(Math.round(total * 100)), String(arm.version)]);
    }
    if (Math.abs(total - 100) > 1e-6) {
      throw invalid(`split: the percentages add up to ${total}, not 100`);
    }
    fallback = cfg.default ?? String(cfg.split[0].version);
    settings = cfg;
  },
};

function choose(user) {
  if (!user) {
    return fallback;
  }
  const b = bucket(settings.salt, user);
  for (const [bound, version] of bounds) {
    if (b < bound) {
      return version;
    }
  }
  return fallback;
}

const CONTINUE = { tag: 'continue' };

class HttpStream {
  onRequestHeaders(_count, _endOfStream) {
    const version = choose(getHeader('request-headers', settings.header));
    setHeader('request-headers', settings.target, version);
    counterAdd('ab_requests', [['version', version]], 1n);
    return CONTINUE;
  }

  onRequestBody(_size, _endOfStream) {
    return CONTINUE;
  }

  onRequestTrailers(_count) {
    return CONTINUE;
  }

  onResponseHeaders(_count, _endOfStream) {
    return CONTINUE;
  }

  onResponseBody(_size, _endOfStream) {
    return CONTINUE;
  }

  onResponseTrailers(_count) {
    return CONTINUE;
  }

  onDone() {}
}

export const filter = { HttpStream, onTick() {}, onHttpCallResponse(_token, _status, _body) {} };
