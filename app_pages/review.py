"""Review page: a model's test predictions case by case, false positives first, with verdicts.

Widgets are in ``pneumo_app.review_ui`` (navigation: ``review_nav``; verdicts: ``review_verdicts``;
readers: ``review_readers``; full resolution: ``review_fullres``; cached readers: ``review_cache``);
the session model is ``pneumo.review.cases``, verdicts ``pneumo.store.verdicts``.
"""
from pneumo_app import review_ui

review_ui.review_page()
