"""translation: caption translation through a chain of providers, with a Redis cache and a MongoDB memory."""
