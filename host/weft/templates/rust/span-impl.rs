impl SpanProcessor for Tagger {
    fn process_spans(&mut self, traces: Traces<'_>, edits: &mut Edits) -> Result<(), Error> {
        for (_, span) in traces.spans() {
            edits.set_attribute(&span, "tagged.by", self.value.as_str());
        }
        Ok(())
    }
}
