// {{name}}: a weft plugin in JavaScript (world `weft:plugin/{{world}}`).
//
// Sets the string attribute `tagged.by` to the configured `value` on every span and log record
// the world passes. Configuration: `{"value": "<text>"}` (default "{{name}}"); any other key
// fails the load with `error.invalid-config`.
//
// The exports are the world's interfaces by their camel-case names; a WIT `result` error is
// thrown as the error variant's value (`{ tag: 'invalid-config', val: '…' }`).

import { getJson } from 'weft:plugin/config@0.2.0';

const KEY = 'tagged.by';

{{lifecycle}}
/** The attributes with `tagged.by` set (replacing one already there). */
function tag(attributes) {
  const kept = attributes.filter((kv) => kv.key !== KEY);
  kept.push({ key: KEY, value: { tag: 'str', val: value } });
  return kept;
}

// <spans>
export const spans = {
  processSpans(batch) {
    for (const span of batch.spans) {
      span.attributes = tag(span.attributes);
    }
    return batch;
  },
};

// </spans>
// <logs>
export const logs = {
  processLogs(batch) {
    for (const record of batch.records) {
      record.attributes = tag(record.attributes);
    }
    return batch;
  },
};

// </logs>
