impl LogTransform for Tagger {
    fn process_logs(&mut self, logs: Logs<'_>, edits: &mut Edits) -> Result<(), Error> {
        for (_, record) in logs.records() {
            edits.set_attribute(&record, "tagged.by", self.value.as_str());
        }
        Ok(())
    }
}
