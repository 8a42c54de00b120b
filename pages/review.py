"""Review page: a model's test predictions case by case, false positives first, with verdicts.

All widgets are in ``pneumo_app.review_ui``; the session model is ``pneumo.review``.
"""
from pneumo_app import common, review_ui

common.page_guard()
review_ui.review_page()
