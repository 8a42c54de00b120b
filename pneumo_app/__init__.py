"""Streamlit-side helpers of the pneumo app (the library in ``pneumo/`` never imports streamlit)."""
