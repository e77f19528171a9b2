"""After training: fine-tuning on production data, promotion gates, lineage."""
