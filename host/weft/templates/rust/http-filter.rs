//! {{name}}: a weft HTTP filter (world `weft:plugin/http-filter`): runs in weft's filter proxy
//! and, after `weft adapt`, in Envoy.
//!
//! A request whose path starts with `/deny` gets a local `403` with a JSON body (the upstream is
//! not called) and a log line; every other request goes upstream with the header
//! `x-tagged-by: <value>`. Both are counted in the metric `{{crate}}_requests{outcome}`.

use weft_guest::{Action, HttpFilter, LocalResponse, http, log, metrics};

{{settings}}
impl HttpFilter for Tagger {
    type Stream = ();

    fn new_stream(&mut self) {}

    fn on_request_headers(&mut self, _: &mut (), _headers: u32, _end_of_stream: bool) -> Action {
        let path = http::property_str("request.path").unwrap_or_default();
        if path.starts_with("/deny") {
            metrics::counter_add("{{crate}}_requests", &[("outcome".into(), "denied".into())], 1);
            log::info(&format!("{{name}}: denied {path}"));
            return Action::Respond(LocalResponse::json(
                403,
                r#"{"error":"denied"}"#,
                "{{crate}}_denied",
            ));
        }
        http::set_request_header("x-tagged-by", &self.value);
        metrics::counter_add("{{crate}}_requests", &[("outcome".into(), "tagged".into())], 1);
        Action::Continue
    }
}

weft_guest::export_http_filter!(Tagger);
