// {{name}}: a weft HTTP filter in JavaScript (world `weft:plugin/http-filter`): runs in weft's
// filter proxy and, after `weft adapt`, in Envoy.
//
// A request whose path starts with `/deny` gets a local 403 with a JSON body (the upstream is not
// called) and a log line; every other request goes upstream with `x-tagged-by: <value>`. Both
// are counted in the metric `{{crate}}_requests{outcome}`. Configuration: `{"value": "<text>"}`
// (default "{{name}}"); any other key fails the load with `error.invalid-config`.

import { getJson } from 'weft:plugin/config@0.2.0';
import { getProperty, setHeader } from 'weft:plugin/http@0.2.0';
import { log } from 'weft:plugin/log@0.2.0';
import { counterAdd } from 'weft:plugin/metrics@0.2.0';

{{lifecycle}}
const CONTINUE = { tag: 'continue' };

/** One request/response exchange (the `http-stream` resource). */
class HttpStream {
  onRequestHeaders(_headerCount, _endOfStream) {
    const raw = getProperty(['request', 'path']);
    const path = raw ? new TextDecoder().decode(raw) : '';
    if (path.startsWith('/deny')) {
      counterAdd('{{crate}}_requests', [['outcome', 'denied']], 1n);
      log('info', `{{name}}: denied ${path}`);
      return {
        tag: 'respond',
        val: {
          status: 403,
          headers: [['content-type', 'application/json']],
          body: new TextEncoder().encode('{"error":"denied"}'),
          details: '{{crate}}_denied',
        },
      };
    }
    setHeader('request-headers', 'x-tagged-by', value);
    counterAdd('{{crate}}_requests', [['outcome', 'tagged']], 1n);
    return CONTINUE;
  }

  onRequestBody(_bodySize, _endOfStream) {
    return CONTINUE;
  }

  onRequestTrailers(_trailerCount) {
    return CONTINUE;
  }

  onResponseHeaders(_headerCount, _endOfStream) {
    return CONTINUE;
  }

  onResponseBody(_bodySize, _endOfStream) {
    return CONTINUE;
  }

  onResponseTrailers(_trailerCount) {
    return CONTINUE;
  }

  onDone() {}
}

export const filter = {
  HttpStream,
  onTick() {},
  onHttpCallResponse(_token, _status, _body) {},
};
