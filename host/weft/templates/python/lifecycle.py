# Set by `init`, which runs once per instance before any call.
value = "{{name}}"


def _invalid(message: str) -> Err:
    return Err(Error_InvalidConfig("{{name}}: " + message))


class Lifecycle(exports.Lifecycle):
    def init(self) -> None:
        global value
        try:
            cfg = json.loads(config.get_json() or "{}")
        except ValueError as e:
            raise _invalid(f"configuration is not JSON: {e}")
        if not isinstance(cfg, dict):
            raise _invalid("configuration must be a JSON object")
        unknown = sorted(set(cfg) - {"value"})
        if unknown:
            raise _invalid(f"unknown key(s) {', '.join(map(repr, unknown))}; expected only 'value'")
        configured = cfg.get("value", "{{name}}")
        if not isinstance(configured, str) or not configured:
            raise _invalid("'value' must be a non-empty string")
        value = configured
