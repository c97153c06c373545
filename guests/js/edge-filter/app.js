// edge-filter: a weft http filter in JavaScript (world `weft:plugin/http-filter`), the same
// behaviour as guests/python/edge-filter, run by the tests in weft's filter proxy and, after
// `weft adapt`, in Envoy.
//
// - `/deny…`: a local 403 `{"error":"denied"}` (the upstream is not called), a log line.
// - everything else goes upstream with `x-edge-lang: js`;
// - a `text/plain` request body is buffered and every digit in it replaced by `#` (its
//   content-length follows);
// - the response gets `x-edge-served-by: <lang>`;
// - counted in the metric `edge_requests{outcome=denied|passed|masked}`.
//
// Configuration: `{"lang": "<name>"}` (default "js") is what `x-edge-lang` says.
//
// Built with every componentize-js feature disabled (package.json), so the component imports
// only weft:plugin interfaces and `weft adapt` can make a Proxy-Wasm module of it.

import { getJson } from 'weft:plugin/config@0.2.0';
import { getBody, getHeader, getProperty, replaceBody, setHeader } from 'weft:plugin/http@0.2.0';
import { log } from 'weft:plugin/log@0.2.0';
import { counterAdd } from 'weft:plugin/metrics@0.2.0';

let lang = 'js';

const CONTINUE = { tag: 'continue' };
const PAUSE = { tag: 'pause' };

function count(outcome) {
  counterAdd('edge_requests', [['outcome', outcome]], 1n);
}

export const lifecycle = {
  init() {
    const cfg = JSON.parse(getJson() || '{}');
    const unknown = Object.keys(cfg).filter((k) => k !== 'lang');
    if (unknown.length > 0) {
      throw { tag: 'invalid-config', val: `edge-filter: unknown key(s) ${unknown.join(', ')}` };
    }
    if (cfg.lang !== undefined) {
      if (typeof cfg.lang !== 'string' || cfg.lang === '') {
        throw { tag: 'invalid-config', val: "edge-filter: 'lang' must be a non-empty string" };
      }
      lang = cfg.lang;
    }
  },
};

class HttpStream {
  constructor() {
    this.buffering = false;
  }

  onRequestHeaders(_count, endOfStream) {
    const raw = getProperty(['request', 'path']);
    const path = raw ? new TextDecoder().decode(raw) : '';
    if (path.startsWith('/deny')) {
      count('denied');
      log('info', `edge-filter: denied ${path}`);
      return {
        tag: 'respond',
        val: {
          status: 403,
          headers: [['content-type', 'application/json']],
          body: new TextEncoder().encode('{"error":"denied"}'),
          details: 'edge_filter_denied',
        },
      };
    }
    setHeader('request-headers', 'x-edge-lang', lang);
    count('passed');
    const type = getHeader('request-headers', 'content-type') ?? '';
    if (!endOfStream && type.startsWith('text/plain')) {
      this.buffering = true;
      return PAUSE;
    }
    return CONTINUE;
  }

  onRequestBody(size, endOfStream) {
    if (!this.buffering) {
      return CONTINUE;
    }
    if (!endOfStream) {
      return PAUSE;
    }
    this.buffering = false;
    const text = new TextDecoder().decode(getBody('request', 0, size));
    const masked = text.replace(/[0-9]/g, '#');
    if (masked !== text) {
      const bytes = new TextEncoder().encode(masked);
      replaceBody('request', 0, size, bytes);
      if (getHeader('request-headers', 'content-length') !== undefined) {
        setHeader('request-headers', 'content-length', String(bytes.length));
      }
      count('masked');
    }
    return CONTINUE;
  }

  onRequestTrailers(_count) {
    return CONTINUE;
  }

  onResponseHeaders(_count, _endOfStream) {
    setHeader('response-headers', 'x-edge-served-by', lang);
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

export const filter = {
  HttpStream,
  onTick() {},
  onHttpCallResponse(_token, _status, _body) {},
};
