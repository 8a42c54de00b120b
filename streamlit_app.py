"""pneumo's Streamlit app: `streamlit run streamlit_app.py`.

Navigation only (`pneumo_app.common.run_app`); every page lives in `app_pages/` and calls the
`pneumo` library. On first launch (no pack in the workspace) the demo pack is made here, so
every page has data to show.
"""

# Streamlit runs this file as `__main__`, so the worker processes that pneumo.store.pack starts
# with the "spawn" method re-import it as `__mp_main__`: they must not draw the app again
# (nor make another demo pack from inside a worker).
if __name__ != "__mp_main__":
    from pneumo_app import common

    common.run_app()
