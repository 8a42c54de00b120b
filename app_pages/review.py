"""Review page: a model's test predictions case by case, false positives first, with verdicts.

Widgets are in ``pneumo_app.review_ui`` (navigation: ``pneumo_app.review_nav``); the session
model is ``pneumo.review.cases``, verdicts ``pneumo.store.verdicts``.
"""
from pneumo_app import review_ui

review_ui.review_page()
