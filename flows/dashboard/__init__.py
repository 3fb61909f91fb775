"""The review dashboard: a Streamlit app over a results root (``eml dashboard --results LOCATION``).

``app.py`` is the entry point (the pages in ``views/``, one per kind of result); ``data.py`` caches what the pages
read through :mod:`tasks.review`; ``settings.py`` is how the command line hands the app its options.
"""
