"""ui: the Streamlit web UI; it reaches capq only through the HTTP API (no storage, no workers imports)."""
