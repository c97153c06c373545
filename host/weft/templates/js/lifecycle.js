// Set by `init`, which runs once per instance before any call.
let value = '{{name}}';

function invalid(message) {
  return { tag: 'invalid-config', val: `{{name}}: ${message}` };
}

export const lifecycle = {
  init() {
    let cfg;
    try {
      cfg = JSON.parse(getJson() || '{}');
    } catch (e) {
      throw invalid(`configuration is not JSON: ${e.message}`);
    }
    if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) {
      throw invalid('configuration must be a JSON object');
    }
    const unknown = Object.keys(cfg).filter((k) => k !== 'value').sort();
    if (unknown.length > 0) {
      throw invalid(`unknown key(s) ${unknown.map((k) => `'${k}'`).join(', ')}; expected only 'value'`);
    }
    const configured = cfg.value ?? '{{name}}';
    if (typeof configured !== 'string' || configured === '') {
      throw invalid("'value' must be a non-empty string");
    }
    value = configured;
  },
};
