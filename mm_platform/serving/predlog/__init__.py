"""The prediction log: records, the journal, the Parquet store, the writer, maintenance."""
