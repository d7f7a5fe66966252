"""adapters: one Captioner subclass per model architecture, all behind workers.adapters.base.Captioner."""
