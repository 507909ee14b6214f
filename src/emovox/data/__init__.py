"""From utterance records to model-ready batches: loading, length grouping, padding per batch."""
