"""producer: how work gets into capq (validate, store, record, enqueue) and answers get out."""
