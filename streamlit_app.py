"""pneumo's Streamlit app: `streamlit run streamlit_app.py`.

Navigation only; every page lives in `pages/` and calls the `pneumo` library. On first launch
(no pack in the workspace) the demo pack is made here, so every page has data to show.
"""
from pathlib import Path

_HERE = Path(__file__).parent
_PAGES = [
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/data.py", "Data", ":material/database:"),
    ("pages/augmentation.py", "Augmentation", ":material/auto_awesome_motion:"),
    ("pages/training.py", "Training", ":material/model_training:"),
    ("pages/review.py", "Review", ":material/fact_check:"),
]


def main() -> None:
    import streamlit as st

    from pneumo_app import common

    st.set_page_config(page_title="pneumo", page_icon=":material/pulmonology:", layout="wide")
    pages = [
        st.Page(path, title=title, icon=icon, default=(title == "Home"))
        for path, title, icon in _PAGES
        if (_HERE / path).exists()
    ]
    page = st.navigation(pages)
    common.workspace_sidebar()
    common.ensure_demo_pack()
    page.run()


# Streamlit runs this file as `__main__`, so the worker processes that pneumo.pack starts
# with the "spawn" method re-import it as `__mp_main__`: they must not draw the app again
# (nor make another demo pack from inside a worker).
if __name__ != "__mp_main__":
    main()
